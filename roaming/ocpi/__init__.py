"""The OCPI 2.2.1 wire layer, shared by every module: envelope, credentials, pagination, client.

- `envelope`: status codes, the response envelope, OcpiError, DateTime format.
- `credentials`: token hashing/encryption and the `Authorization: Token ...` header.
- `endpoint`: the `ocpi_endpoint` decorator that authenticates partners and wraps views.
- `pagination`: the GET-list parameters and headers (offset, limit, date_from/to, Link, X-*).
- `client`: our outgoing calls, with timeouts, retries, routing headers and page iteration.
"""
