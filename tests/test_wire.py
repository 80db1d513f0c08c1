"""The wire format the thin client parses: reply headers and whole reply frames, fuzzed."""

from hypothesis import given, settings
from hypothesis import strategies as st

from modules.optimization import wire
from modules.optimization.dispatch import reply as _reply
from modules.optimization.dispatch import reply_error as _reply_error
from modules.optimization.protocol import HookResult


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda parts: b",".join(parts), st.lists(st.sampled_from([b'{"v":1', b'"exit":3', b'"out":-1', b'"err":x', b'"error":""', b"}", b":", b'"v":2']), max_size=6)))
def test_fuzz_reply_header_parser_fails_only_in_ways_the_client_catches(header):
    try:
        parsed = wire.parse_reply_header(header)
    except (ValueError, KeyError):
        return  # ask_daemon turns these into "no answer": the client evaluates in-process
    assert parsed is None or (len(parsed) == 3 and all(isinstance(n, int) for n in parsed))


@settings(max_examples=200, deadline=None)
@given(st.integers(-300, 300), st.binary(max_size=100), st.binary(max_size=100), st.text(max_size=50))
def test_fuzz_reply_frames_round_trip_through_the_client_parser(code, out, err, message):
    frame = _reply(HookResult(code, out, err))
    size = int.from_bytes(frame[:4], "big")
    assert wire.parse_reply_header(frame[4 : 4 + size]) == (code, len(out), len(err))
    assert frame[4 + size :] == out + err
    error = _reply_error(message)
    assert wire.parse_reply_header(error[4:]) is None

