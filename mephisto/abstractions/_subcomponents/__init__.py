"""The parts a blueprint is made of besides itself (Mephisto's `_subcomponents`): the
`TaskRunner` (Python beside live units) and the `TaskBuilder` (the front-end's build)."""
