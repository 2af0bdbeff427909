"""HTTP plumbing shared by every filter: reading a request once,
routes, the request object, JSON, documents handed between filters and
error responses in Glance's style."""
