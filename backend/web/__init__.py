"""HTTP: the Flask app factory and its blueprints (the LS ML-backend protocol, webhooks, the admin
API, the status page, Prometheus). The only layer that imports Flask."""
