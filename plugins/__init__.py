"""The first-party agent types: ``cost``, ``performance``, ``resource`` and ``application``.

Each module is an ordinary plugin, found through the same ``optistate``
entry-point group as third-party ones (see ``setup.cfg``), and a template to
copy: one ``register_agent_types`` hook declaring defaults, and one
``validate_config`` hook refusing values that make no sense.
"""
