"""Alembic migrations of both sides; run them with `smsmta db upgrade`, see smsmta.db.migrate."""
