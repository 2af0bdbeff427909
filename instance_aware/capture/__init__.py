"""Capture and strip: the machinery shared by the two filters that keep
image properties in the mapping database (instance_metadata and
encryption_properties): splitting bodies, the create/update/delete/list
flows, and filtered lists."""
