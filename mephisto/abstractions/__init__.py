"""The core abstractions' contracts: `blueprint`, `architect`, `crowd_provider`.

Implementations live one level down (`blueprints/`, `architects/`, `providers/`), one
module per plugin. Contracts may import `errors`, `utils`, `data_model` and `db`.
"""
