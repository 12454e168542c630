"""Methods that learn their transform: flatquant, freeact (masks per token type), freeact-general (factors per type)."""

from __future__ import annotations

from freeact_export.quantize.freeact import learn_freeact
from freeact_export.quantize.methods import GroupInput, GroupTransform, Method, register


def _planner(single_type: bool, per_type: bool):
    def plan_group(group: GroupInput) -> GroupTransform:
        tensors, weight_clip, info = learn_freeact(group.name, group.stats, group.weights, group.weight_spec,
                                                   group.act_spec, group.learning, single_type, group.seed, per_type)
        return GroupTransform("kronecker", tensors, weight_clip, info)

    return plan_group


register(Method("flatquant", 4, _planner(single_type=True, per_type=False), learned=True))
register(Method("freeact", 5, _planner(single_type=False, per_type=False), learned=True))
register(Method("freeact-general", 6, _planner(single_type=False, per_type=True), learned=True))
