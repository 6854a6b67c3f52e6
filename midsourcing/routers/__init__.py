"""The mid API's routes as FastAPI routers, assembled by midsourcing.api.create_app.

`status` (/status, /healthz), `auth` (/api/v1/token, /api/v1/connection) and `deliveries`
(/api/v1/preview, /api/v1/deliveries...); `deps` holds the application state and the
dependencies they share (connection, operator), `errors` the Problem answers.
"""
