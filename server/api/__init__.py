"""The API: the route table and its functions, strict JSON bodies, the OpenAPI
description and the dashboard's static files."""
