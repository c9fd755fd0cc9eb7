"""The records cueapi reads and returns: pydantic models in the official SDK's shapes (so
``model_validate``, ``model_dump`` and attribute access work as there), shared by the client,
the embedded App and remote mode."""

from .agent import Agent, AgentList
from .cue import (
    AlertConfig,
    Callback,
    Cue,
    CueList,
    DeliveryConfig,
    OnFailure,
    Retry,
    Schedule,
    VerificationConfig,
)
from .execution import Attempt, Evidence, Execution, ExecutionList, OutcomeDetail
from .message import FromAgentRef, Message, MessageList, StateTransitionResponse
from .stats import Stats
from .worker import Worker, WorkerList

__all__ = [
    "Agent",
    "AgentList",
    "AlertConfig",
    "Attempt",
    "Callback",
    "Cue",
    "CueList",
    "DeliveryConfig",
    "Evidence",
    "Execution",
    "ExecutionList",
    "FromAgentRef",
    "Message",
    "MessageList",
    "OnFailure",
    "OutcomeDetail",
    "Retry",
    "Schedule",
    "StateTransitionResponse",
    "Stats",
    "VerificationConfig",
    "Worker",
    "WorkerList",
]
