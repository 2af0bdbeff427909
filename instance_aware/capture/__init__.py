"""Capture and strip: the machinery shared by the two filters that keep
image properties in the mapping database (instance_metadata and
encryption_properties).  The flow is :mod:`.filter`; each job (create,
update, delete, lists, give-back) is a module of its own."""
