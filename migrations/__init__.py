"""Numbered schema migrations, run by :mod:`optistate.schema` through ``playhouse.migrations``.

Each file freezes its own table definitions; none imports the application
models, so a later change to :mod:`optistate.models` never rewrites history.
"""
