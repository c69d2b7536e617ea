"""Mephisto's import path for the remote procedure blueprint; the real home is
`mephisto.abstractions.blueprints.remote_procedure` (the package's `__init__`)."""

from mephisto.abstractions.blueprints.remote_procedure import (
    BLUEPRINT_TYPE_REMOTE_PROCEDURE,
    RemoteProcedureAgentState,
    RemoteProcedureBlueprint,
    RemoteProcedureBlueprintArgs,
    SharedRemoteProcedureTaskState,
)

__all__ = ["BLUEPRINT_TYPE_REMOTE_PROCEDURE", "RemoteProcedureAgentState",
           "RemoteProcedureBlueprint", "RemoteProcedureBlueprintArgs",
           "SharedRemoteProcedureTaskState"]
