"""promptfoo `eval --output results.json` (results version 3, older versions alike) and `--output results.jsonl`.

One result per (test case, prompt, provider). A file comparing several prompts or providers therefore repeats each
test; the identity then carries the provider and prompt index so rows stay distinct.
"""

from __future__ import annotations

from typing import Any, Iterator

from .common import UNIT, Source, content_id, iter_objects, load_json, make_score, stem, to_utc
from .model import EvalFile, EvalRow, Score

ERROR_FAILURE = 2  # promptfoo ResultFailureReason: 0 none, 1 assertion failed, 2 error


def read(source: Source) -> EvalFile:
    if source.name.lower().endswith(".jsonl"):
        return _read_lines(source)
    with source.opener() as f:
        document = load_json(source, f)
    if not isinstance(document, dict):
        raise source.fail(None, "expected a promptfoo output object")
    section = document.get("results")
    results = section.get("results") if isinstance(section, dict) else section
    if not isinstance(results, list):
        raise source.fail(None, "expected a list of results under results.results")
    section = section if isinstance(section, dict) else {}
    started = to_utc(section.get("timestamp")) or to_utc((document.get("metadata") or {}).get("evaluationCreatedAt"))
    model, several = _providers(result for result in results if isinstance(result, dict))
    rows = _rows(source, ((f"result {index}", result) for index, result in enumerate(results, 1)), several)
    return EvalFile(source.path, "promptfoo", stem(source.path), model, started, None, rows)


def _read_lines(source: Source) -> EvalFile:
    with source.opener() as f:  # first pass: which providers and prompts, one line in memory at a time
        model, several = _providers(record for _, record in iter_objects(source, f))
    return EvalFile(source.path, "promptfoo", stem(source.path), model, None, None, _line_rows(source, several))


def _line_rows(source: Source, several: bool) -> Iterator[EvalRow]:
    with source.opener() as f:
        yield from _rows(source, iter_objects(source, f), several)


def _providers(results) -> tuple[str | None, bool]:
    """(the model when there is one provider, whether several prompt/provider combinations share the tests)."""
    providers, prompts = set(), set()
    for result in results:
        providers.add(_provider(result))
        prompts.add(result.get("promptIdx"))
    model = next(iter(providers)) if len(providers) == 1 else None
    return model, len(prompts) > 1 or len(providers) > 1


def _provider(result: dict) -> str | None:
    provider = result.get("provider")
    return provider.get("id") if isinstance(provider, dict) else provider


def _rows(source: Source, results: Iterator[tuple[str, Any]], several: bool) -> Iterator[EvalRow]:
    for location, result in results:
        if not isinstance(result, dict):
            raise source.fail(location, "expected a result object")
        yield source.finish(result, to_row(result, several))


def to_row(result: dict, several: bool) -> EvalRow:
    test = result.get("testCase") or {}
    variables = result.get("vars") or test.get("vars") or {}
    inputs = dict(variables) if isinstance(variables, dict) else {"vars": variables}
    prompt = (result.get("prompt") or {}).get("raw")
    if prompt is not None:
        inputs["rendered_prompt" if "prompt" in inputs else "prompt"] = prompt
    asserted = [{"type": a.get("type"), "value": a["value"]} for a in test.get("assert") or []
                if isinstance(a, dict) and "value" in a]
    response = result.get("response") or {}
    test_id = result.get("testIdx", test.get("description"))
    identity = str(test_id) if test_id is not None else content_id(inputs)
    if several:
        identity = f"{identity}/{_provider(result)}/prompt {result.get('promptIdx')}"
    return EvalRow(
        identity=identity,
        inputs=inputs,
        expected={"assert": asserted} if asserted else None,
        outputs={"output": response["output"]} if "output" in response else None,
        scores=_scores(result),
        error=_error(result, response),
        metadata=_metadata(result, test, response),
    )


def _scores(result: dict) -> list[Score]:
    grading = result.get("gradingResult") or {}
    scores = [make_score("score", result.get("score"))]
    if isinstance(result.get("success"), bool):
        reason = grading.get("reason") if not result["success"] else None
        scores.append(Score("success", float(result["success"]), comment=reason, feedback_config=dict(UNIT)))
    scores += [make_score(str(name), value) for name, value in (result.get("namedScores") or {}).items()]
    seen: dict[str, int] = {}
    for component in grading.get("componentResults") or []:
        kind = (component.get("assertion") or {}).get("type") or "assert"
        seen[kind] = seen.get(kind, 0) + 1
        key = f"assert/{kind}" + (f"#{seen[kind]}" if seen[kind] > 1 else "")
        scores.append(make_score(key, component.get("score"), component.get("reason")))
    return [score for score in scores if score]


def _error(result: dict, response: dict) -> str | None:
    # `error` also holds the failed assertion's reason; only failureReason 2 is an error of the run itself
    ungraded = "failureReason" not in result and not result.get("gradingResult")
    if result.get("failureReason") == ERROR_FAILURE or ungraded:
        error = result.get("error") or response.get("error")
        return str(error) if error else None
    return str(response["error"]) if response.get("error") else None


def _metadata(result: dict, test: dict, response: dict) -> dict:
    facts = {
        "provider": _provider(result),
        "promptIdx": result.get("promptIdx"),
        "testIdx": result.get("testIdx"),
        "description": test.get("description"),
        "latencyMs": result.get("latencyMs"),
        "cost": result.get("cost"),
        "tokenUsage": response.get("tokenUsage"),
        "promptLabel": (result.get("prompt") or {}).get("label"),
        "resultId": result.get("id"),
    }
    return {key: value for key, value in facts.items() if value is not None}
