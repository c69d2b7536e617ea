"""Parts several blueprints share, each a `BlueprintMixin` with its own arguments and
shared state (Mephisto's `blueprints.mixins`): onboarding (`onboarding_required`),
screening units (`screen_task_required`) and gold units (`use_gold_unit`). The static,
React and live blueprints include all three."""
