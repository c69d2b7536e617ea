"""Onboarding (Mephisto's `OnboardingRequired`): a worker without the onboarding
qualification first does an onboarding step whose data `validate_onboarding` checks.

Onboarding is part of every blueprint here (`Blueprint.use_onboarding`,
`BlueprintArgs.onboarding_qualification`, `SharedTaskState.onboarding_data` and
`validate_onboarding`); this module gives Mephisto's names for those parts so blueprints
and run scripts written against them import unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mephisto.abstractions.blueprint import BlueprintMixin

__all__ = ["OnboardingRequired", "OnboardingRequiredArgs", "OnboardingSharedState"]


@dataclass
class OnboardingRequiredArgs:
    onboarding_qualification: str | None = field(
        default=None,
        metadata={"help": "Qualification recording onboarding results; set it to require "
                          "onboarding."},
    )


@dataclass
class OnboardingSharedState:
    onboarding_data: dict[str, Any] = field(default_factory=dict)
    validate_onboarding: Callable[[Any], bool] | None = None


class OnboardingRequired(BlueprintMixin):
    """Mephisto's onboarding mixin; the behaviour is the base blueprint's."""

    ArgsMixin: ClassVar[type[Any]] = OnboardingRequiredArgs
    SharedStateMixin: ClassVar[type[Any]] = OnboardingSharedState

    def init_mixin_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        """Nothing to set up: the worker pool runs onboarding from the arguments."""

    @staticmethod
    def get_failed_qual(qual_name: str) -> str:
        """Mephisto's name for a failed-onboarding qualification. Here a failure is the
        onboarding qualification held with value 0."""
        return f"{qual_name}-failed"

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        """Nothing to add: workers who failed onboarding are refused by the worker pool."""
        return []


