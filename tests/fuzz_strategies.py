"""Hypothesis strategies for hostile event and frame input, shared by the fuzz tests."""

import json

from hypothesis import strategies as st

from modules.optimization.protocol import EVENTS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


event_like = st.fixed_dictionaries(
    {},
    optional={
        "hook_event_name": st.sampled_from(sorted(EVENTS)) | st.text(max_size=12) | json_values,
        "tool_name": st.sampled_from(["Bash", "Read", "Write", ""]) | json_values,
        "tool_input": st.fixed_dictionaries({}, optional={"command": st.text(max_size=40), "file_path": st.text(max_size=20)}) | json_values,
        "tool_use_id": st.text(max_size=10),
        "cwd": st.text(max_size=10),
    },
)


@st.composite
def mangled(draw, values):
    """JSON text of a drawn value, sometimes cut short or with bytes spliced in."""
    raw = json.dumps(draw(values)).encode()
    how = draw(st.sampled_from(["as is", "cut", "splice"]))
    if how == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif how == "splice":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    return raw

