"""The kernel as a data service: typed requests in, one reply with the request's id out, never a crash."""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vitlens_widgets as vl
from vitlens_widgets.widgets import service as service_module
from vitlens_widgets.widgets.payload import metric_slices
from vitlens_widgets.widgets.protocol import Limits, ProtocolError, parse_request
from vitlens_widgets.widgets.service import ExplorerService
from vitlens_widgets.widgets.specs import METRIC_SPECS, SITE_SPECS


@pytest.fixture(scope="module")
def service(lens) -> ExplorerService:
    service = ExplorerService(lens)
    image = vl.data.shapes(1, seed=2).images[0]
    service.show(lens.trace(image, attention="self_only"), image=0, version=4, base=lens.trace(image))
    return service


def test_slices_are_float32_buffers_of_the_engines_numbers(service):
    header, buffers = service.answer(
        {"kind": "slices", "id": 7, "image": 0, "site": "attn", "metric": "probability", "classes": [2, 5]}
    )
    assert header == {
        "kind": "slices", "id": 7, "image": 0, "version": 4, "site": "attn", "metric": "probability",
        "classes": [2, 5], "rows": 3, "tokens": 17, "base": False,
    }  # fmt: skip
    data = np.frombuffer(buffers[0], dtype=np.float32).reshape(2, 3, 17)
    np.testing.assert_array_equal(data, metric_slices(service.trace, "attn", "probability", [2, 5]))
    np.testing.assert_allclose(data[0], service.trace.probs("attn")[..., 2], rtol=1e-5)


def test_base_slices_come_from_the_unperturbed_trace(service):
    ask = {"kind": "slices", "id": 8, "image": 0, "site": "resid", "metric": "logit", "classes": [1]}
    _, now = service.answer(ask)
    header, base = service.answer({**ask, "base": True})
    assert header["base"] is True
    np.testing.assert_array_equal(
        np.frombuffer(base[0], np.float32), service.base_trace.logits("resid")[..., 1].ravel()
    )
    assert not np.array_equal(np.frombuffer(now[0], np.float32), np.frombuffer(base[0], np.float32))


def _blocked_rank_index(monkeypatch) -> threading.Event:
    """Make every RankIndex wait for the returned event before sorting."""
    release = threading.Event()
    real = vl.Trace.rank_index

    def slow(trace, site="resid"):
        assert release.wait(30)
        return real(trace, site)

    monkeypatch.setattr(vl.Trace, "rank_index", slow)
    return release


def _background_done(service: ExplorerService) -> None:
    service._builder.submit(lambda: None).result(timeout=30)  # one worker: everything before it ran


def test_a_single_class_is_ranked_at_once_while_the_index_is_sorted_in_the_background(service, monkeypatch):
    service.show(service.trace, 0, 5, base=service.base_trace)
    release = _blocked_rank_index(monkeypatch)
    ask = {"kind": "slices", "id": 1, "image": 0, "site": "mlp", "metric": "identifiability"}
    for cls in range(3):  # answered while the index is still being sorted: never waits for it
        _, buffers = service.answer({**ask, "classes": [cls]})
        got = np.frombuffer(buffers[0], dtype=np.float32).reshape(3, 17)
        np.testing.assert_array_equal(got, service.trace.identifiability(cls, "mlp"))
    assert service._rank_index is None
    release.set()
    _background_done(service)
    assert service._rank_index[0] == "mlp"  # later classes are a lookup, with the same numbers
    for cls in range(10):
        _, buffers = service.answer({**ask, "classes": [cls]})
        got = np.frombuffer(buffers[0], dtype=np.float32).reshape(3, 17)
        np.testing.assert_array_equal(got, service.trace.identifiability(cls, "mlp"))


def test_the_background_sort_hands_its_temporaries_back(service, monkeypatch):
    service.show(service.trace, 0, 10, base=service.base_trace)
    trims = []
    monkeypatch.setattr(service_module, "trim_heap", lambda: trims.append(service._rank_index))
    service.answer({"kind": "slices", "id": 1, "image": 0, "site": "attn", "metric": "identifiability", "classes": [1]})
    _background_done(service)
    assert len(trims) == 1 and trims[0][0] == "attn"  # once the index is kept and its sort's arrays are freed


def test_an_index_sorted_for_a_trace_no_longer_shown_is_dropped(service, lens, monkeypatch):
    service.show(service.trace, 0, 6, base=service.base_trace)
    release = _blocked_rank_index(monkeypatch)
    service.answer({"kind": "slices", "id": 1, "image": 0, "site": "attn", "metric": "identifiability", "classes": [2]})
    service.show(service.base_trace, 0, 7)  # the what-if turned off while the index was being sorted
    release.set()
    _background_done(service)
    assert service._rank_index is None


def test_many_classes_build_the_index_at_once_unless_it_is_too_large(service, monkeypatch):
    service.show(service.trace, 0, 8, base=service.base_trace)
    ask = {
        "kind": "slices",
        "id": 1,
        "image": 0,
        "site": "mlp",
        "metric": "identifiability",
        "classes": list(range(10)),
    }
    _, buffers = service.answer(ask)
    assert service._rank_index[0] == "mlp"
    got = np.frombuffer(buffers[0], dtype=np.float32).reshape(10, 3, 17)
    np.testing.assert_array_equal(got[7], service.trace.identifiability(7, "mlp"))
    service.show(service.trace, 0, 9, base=service.base_trace)
    monkeypatch.setattr(service_module, "RANK_INDEX_BYTES", 100)  # a 21k-class head's index: 112 MB
    _, buffers = service.answer(ask)
    _background_done(service)
    assert service._rank_index is None
    got = np.frombuffer(buffers[0], dtype=np.float32).reshape(10, 3, 17)
    np.testing.assert_array_equal(got[7], service.trace.identifiability(7, "mlp"))


def test_logits_come_in_row_chunks_with_the_log_partition(service):
    header, buffers = service.answer({"kind": "logits", "id": 11, "image": 0, "site": "attn", "start": 1, "stop": 3})
    assert header == {
        "kind": "logits", "id": 11, "image": 0, "version": service.version, "site": "attn",
        "start": 1, "stop": 3, "rows": 3, "tokens": 17, "classes": 10,
    }  # fmt: skip
    logits = np.frombuffer(buffers[0], dtype=np.float32).reshape(2, 17, 10)
    lse = np.frombuffer(buffers[1], dtype=np.float32).reshape(2, 17)
    np.testing.assert_array_equal(logits, service.trace.logits("attn")[1:3])
    np.testing.assert_allclose(np.exp(logits - lse[..., None]), service.trace.probs("attn")[1:3], rtol=1e-5, atol=1e-7)


def test_logits_tables_are_capped_in_size(service, monkeypatch):
    monkeypatch.setattr(service_module, "LOGITS_TABLE_BYTES", 100)
    header, _ = service.answer({"kind": "logits", "id": 13, "image": 0, "site": "resid", "start": 0, "stop": 1})
    assert header["kind"] == "error" and header["id"] == 13 and "too much to send" in header["message"]


def test_memories_are_the_most_activated_with_the_classes_they_write(service, lens):
    header, buffers = service.answer({"kind": "memories", "id": 9, "image": 0, "token": 4, "layer": 2, "site": "mlp"})
    assert header["kind"] == "memories" and header["memory_kind"] == "mlp" and len(header["memories"]) == 5
    keys = lens.memory_keys(service.trace, 2, "mlp")[4]
    np.testing.assert_array_equal(header["memories"], np.argsort(-keys)[:5])
    np.testing.assert_allclose(np.frombuffer(buffers[0], np.float32), np.sort(keys)[::-1][:5], rtol=1e-6)
    assert len(header["classes"][0]) == 3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"kind": "slices", "site": "residual", "metric": "logit", "classes": [1]}, "unknown site"),
        ({"kind": "slices", "site": "resid", "metric": "rank", "classes": [1]}, "unknown metric"),
        ({"kind": "slices", "site": "resid", "metric": "logit", "classes": [10]}, "out of range"),
        ({"kind": "slices", "site": "resid", "metric": "logit", "classes": ["1"]}, "out of range"),
        ({"kind": "slices", "site": "resid", "metric": "logit", "classes": [True]}, "out of range"),
        ({"kind": "slices", "site": "resid", "metric": "logit", "classes": []}, "list of 1..256"),
        ({"kind": "slices", "site": "resid", "metric": "logit", "classes": [1], "base": 1}, "base must be"),
        ({"kind": "logits", "site": "mlp", "start": 0, "stop": 4}, "outside the site's 0..3"),
        ({"kind": "logits", "site": "resid", "start": 2, "stop": 2}, "outside"),
        ({"kind": "logits", "site": "residual", "start": 0, "stop": 4}, "unknown site 'residual'"),
        ({"kind": "memories", "site": "mlp", "layer": 0, "token": 1}, r"blocks 1\.\.3"),
        ({"kind": "memories", "site": "resid", "layer": 0, "token": 1}, r"blocks 1\.\.3"),
        ({"kind": "memories", "site": "mlp", "layer": 4, "token": 1}, r"blocks 1\.\.3"),
        ({"kind": "memories", "site": "mlp", "layer": 1, "token": 17}, "token 17 is out of range"),
        ({"kind": "launch"}, "unknown request 'launch'"),
        ({"kind": "slices", "image": None, "site": "resid", "metric": "logit", "classes": [1]}, "image must be"),
        ({"kind": "logits", "image": -1, "site": "resid", "start": 0, "stop": 1}, "image must be"),
        ({"kind": "memories", "image": "0", "site": "mlp", "layer": 1, "token": 1}, "image must be"),
        ({"kind": "memories", "image": False, "site": "mlp", "layer": 1, "token": 1}, "image must be"),
    ],
)
def test_bad_requests_get_an_error_reply_with_their_id(service, request_, message):
    header, buffers = service.answer({"id": 3, "image": 0, **request_})
    assert header["kind"] == "error" and header["id"] == 3 and re.search(message, header["message"]) and buffers == []


@pytest.mark.parametrize(
    "request_",
    [
        {"kind": "slices", "site": "resid", "metric": "logit", "classes": [1]},
        {"kind": "logits", "site": "resid", "start": 0, "stop": 1},
        {"kind": "memories", "site": "mlp", "layer": 1, "token": 1},
    ],
)
def test_requests_for_another_image_than_the_one_shown_are_refused(service, request_):
    header, buffers = service.answer({"id": 5, "image": 1, **request_})
    assert header == {
        "kind": "error", "id": 5, "request": request_["kind"], "message": "the kernel is showing image 0, not image 1",
    }  # fmt: skip
    assert buffers == []
    assert service.answer({"id": 6, "image": 0, **request_})[0]["kind"] == request_["kind"]


def test_a_request_without_an_image_is_refused(service):
    header, _ = service.answer({"kind": "logits", "id": 2, "site": "resid", "start": 0, "stop": 1})
    assert header["kind"] == "error" and header["id"] == 2 and header["message"].startswith("image must be")


@pytest.mark.parametrize("failure", [RuntimeError("cuda went away"), KeyError("resid"), AssertionError()])
def test_an_unexpected_failure_gets_an_error_reply_with_its_id_and_is_logged(service, monkeypatch, caplog, failure):
    def fail(request):
        raise failure

    monkeypatch.setattr(service, "_logits", fail)
    ask = {"kind": "logits", "id": 21, "image": 0, "site": "resid", "start": 0, "stop": 1}
    with caplog.at_level("ERROR", logger=service_module.__name__):
        header, buffers = service.answer(ask)
    assert header == {
        "kind": "error", "id": 21, "request": "logits",
        "message": f"internal error while answering logits: {type(failure).__name__}: {failure}",
    }  # fmt: skip
    assert buffers == []
    [record] = caplog.records
    assert record.exc_info[1] is failure and "logits request 21" in record.getMessage()


def test_memories_are_the_sublayer_the_site_spec_names(service, monkeypatch):
    ask = {"kind": "memories", "id": 9, "image": 0, "token": 4, "layer": 2}
    kinds = {site: service.answer({**ask, "site": site})[0]["memory_kind"] for site in ("resid", "attn", "mlp")}
    assert kinds == {"resid": "mlp", "attn": "attn", "mlp": "mlp"}
    monkeypatch.setitem(SITE_SPECS, "resid", dataclasses.replace(SITE_SPECS["resid"], memories="attn"))
    assert service.answer({**ask, "site": "resid"})[0]["memory_kind"] == "attn"


def test_the_metric_spec_says_which_metrics_use_the_rank_index(service, monkeypatch):
    ask = {"kind": "slices", "id": 1, "image": 0, "site": "mlp", "classes": list(range(10))}
    assert METRIC_SPECS["identifiability"].ranked and not METRIC_SPECS["probability"].ranked
    service.show(service.trace, 0, 10, base=service.base_trace)
    service.answer({**ask, "metric": "probability"})
    assert service._rank_index is None
    monkeypatch.setitem(METRIC_SPECS, "probability", dataclasses.replace(METRIC_SPECS["probability"], ranked=True))
    _, buffers = service.answer({**ask, "metric": "probability"})
    assert service._rank_index[0] == "mlp"  # built for it: the service reads the spec
    got = np.frombuffer(buffers[0], np.float32).reshape(10, 3, 17)
    np.testing.assert_array_equal(got, metric_slices(service.trace, "mlp", "probability", list(range(10))))


def test_pings_and_requests_without_an_id(service):
    assert service.answer({"kind": "ping", "id": 4}) == ({"kind": "pong", "id": 4}, [])
    header, _ = service.answer("not a dict")
    assert header["kind"] == "error" and header["id"] is None and "JSON object" in header["message"]
    header, _ = service.answer({"kind": "ping", "id": "4"})
    assert header["id"] is None and "integer id" in header["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plausible = st.fixed_dictionaries(
    {"kind": st.sampled_from(["ping", "slices", "logits", "memories", "nope"]), "id": st.integers(-2, 10)},
    optional={
        "site": st.sampled_from(["resid", "attn", "mlp", "x"]) | json_values,
        "metric": st.sampled_from(["identifiability", "probability", "logit"]) | json_values,
        "classes": st.lists(st.integers(-2, 12), max_size=4) | json_values,
        "start": st.integers(-1, 5) | json_values,
        "stop": st.integers(-1, 5) | json_values,
        "layer": st.integers(-1, 5) | json_values,
        "token": st.integers(-1, 20) | json_values,
        "image": st.integers(-1, 2) | json_values,
        "base": st.booleans() | json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=plausible | json_values)
def test_any_message_gets_exactly_one_well_formed_reply(service, content):
    header, buffers = service.answer(content)
    assert header["kind"] in {"pong", "slices", "logits", "memories", "error"}
    if header["kind"] == "error":
        assert isinstance(header["message"], str) and header["message"] and buffers == []
        if isinstance(content, dict) and isinstance(content.get("id"), int) and content["id"] >= 0:
            assert header["id"] == content["id"]
    else:
        assert header["id"] == content["id"]
        assert all(np.isfinite(np.frombuffer(b, np.float32)).all() or header["kind"] != "memories" for b in buffers)


def test_parsed_requests_are_typed(lens):
    limits = Limits(num_classes=10, depth=3, n_tokens=17)
    content = {"kind": "slices", "id": 1, "image": 2, "site": "mlp", "metric": "logit", "classes": [3, 4]}
    request = parse_request(content, limits)
    assert request.classes == (3, 4) and request.base is False and request.image == 2
    request = parse_request({"kind": "memories", "id": 2, "image": 0, "site": "resid", "layer": 3, "token": 16}, limits)
    assert (request.image, request.site, request.layer, request.token) == (0, "resid", 3, 16)
    request = parse_request({"kind": "logits", "id": 3, "image": 1, "site": "resid", "start": 3, "stop": 4}, limits)
    assert (request.image, request.start, request.stop) == (1, 3, 4)  # resid has a row per block and the embeddings
    with pytest.raises(ProtocolError):
        parse_request([], limits)


def test_answers_from_another_thread_describe_one_trace(lens):
    """JupyterLab may deliver the view's requests to a kernel subshell: a reply's numbers, image
    and version must agree even while the main thread shows other traces."""
    import threading

    traces = [lens.trace(image) for image in vl.data.shapes(2, seed=3).images]
    expected = [metric_slices(trace, "mlp", "probability", [4]) for trace in traces]
    assert not np.array_equal(*expected)
    service = ExplorerService(lens)
    service.show(traces[0], image=0, version=0)
    stop, wrong, answered = threading.Event(), [], [0]
    ask = {"kind": "slices", "id": 1, "site": "mlp", "metric": "probability", "classes": [4]}

    def ask_both_images() -> None:
        for image in itertools.cycle((0, 1)):
            if stop.is_set():
                return
            header, buffers = service.answer({**ask, "image": image})
            if header["kind"] == "error":  # the other image is on screen now
                if header["message"] != f"the kernel is showing image {1 - image}, not image {image}":
                    wrong.append(header)
                continue
            data = np.frombuffer(buffers[0], np.float32).reshape(expected[0].shape)
            if header["version"] % 2 != image or not np.array_equal(data, expected[image]):
                wrong.append(header)
            answered[0] += 1

    asker = threading.Thread(target=ask_both_images)
    asker.start()
    for version in range(1, 3000):
        service.show(traces[version % 2], image=version % 2, version=version)
    stop.set()
    asker.join()
    assert answered[0] > 0 and wrong == []


def test_a_logits_chunks_log_partition_equals_the_traces_exactly(service):
    _, buffers = service.answer({"kind": "logits", "id": 12, "image": 0, "site": "mlp", "start": 1, "stop": 2})
    lse = np.frombuffer(buffers[1], dtype=np.float32).reshape(1, 17)
    np.testing.assert_array_equal(lse, service.trace.log_partition("mlp")[1:2])
