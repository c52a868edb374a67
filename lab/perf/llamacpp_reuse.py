"""What the llama.cpp backend's KV-cache reuse saves: second chat turns and multiple-choice scoring.

In one process (llama.cpp only, no torch: see TOOLCHAIN.md), interleaved runs of

* a second chat turn (system prompt + turn 1 + its answer + a new question): time to the first
  token and tokens evaluated, on a backend that just answered turn 1 (its cache holds the
  history) versus a second backend whose cache holds something else (evaluates everything);
* scoring a 4-option multiple-choice item: one `score()` call for the batch (the question is
  evaluated once) versus the four options scored one by one with the cache cleared in between.

Prints medians and ratios.

    python lab/perf/llamacpp_reuse.py [GGUF or build] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

SYSTEM = "You are a careful clinical assistant for community health workers. Answer briefly and clearly."
TURN1 = "A two-year-old has had watery diarrhoea for two days. What should the mother do at home?"
TURN2 = "And which danger signs mean she must go to the clinic today?"
MCQ = ("Question: A 3-year-old child has fever, cough and fast breathing (50 breaths per minute). "
       "What is the most likely diagnosis?\nA. Pneumonia\nB. Common cold\nC. Asthma\nD. Malaria\nAnswer:")


def main() -> None:
    from globmed_edge.backends.base import GenerationRequest, Message, ScoreRequest
    from globmed_edge.backends.llamacpp_backend import LlamaCppBackend
    from globmed_edge.models import DEFAULT_MODEL, MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", help="GGUF file or build folder (default: the embedded SmolLM2 Q4_1)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    path = args.build or MODELS[DEFAULT_MODEL].locate()
    # verify=False: a measurement script, run on loose GGUF files (the packaged one has no manifest)
    warm = LlamaCppBackend(path, threads=args.threads, verify=False)
    cold = LlamaCppBackend(path, threads=args.threads, verify=False)
    warm.load()
    cold.load()
    turn1 = (Message("system", SYSTEM), Message("user", TURN1))
    events = list(warm.stream(GenerationRequest(turn1, max_new_tokens=48)))
    answer = "".join(e.text for e in events)
    # the cache after a real first turn: its prompt and every answer token but the last
    after_turn1 = warm.tokenize(warm.render_chat(turn1)) + [e.token_id for e in events[:-1]]
    turn2 = GenerationRequest((*turn1, Message("assistant", answer), Message("user", TURN2)), max_new_tokens=1)
    n_prompt = len(warm.tokenize(warm.render_chat(turn2.messages)))
    options = [ScoreRequest(MCQ, f" {x}") for x in "ABCD"]

    def second_turn(be: LlamaCppBackend, primed: bool) -> tuple[float, int]:
        if primed:
            be.logprobs(after_turn1)
        else:  # the cache holds something unrelated
            be.logprobs(be.tokenize("Unrelated text."))
        before = be.evaluated_tokens
        start = time.perf_counter()
        next(iter(be.stream(turn2)))
        return time.perf_counter() - start, be.evaluated_tokens - before

    def score_batch(be: LlamaCppBackend) -> float:
        be.logprobs(be.tokenize("Unrelated text."))
        start = time.perf_counter()
        be.score(options)
        return time.perf_counter() - start

    def score_one_by_one(be: LlamaCppBackend) -> float:
        total = 0.0
        for option in options:
            be.logprobs(be.tokenize("Unrelated text."))
            start = time.perf_counter()
            be.score([option])
            total += time.perf_counter() - start
        return total

    second_turn(warm, True), second_turn(cold, False), score_batch(warm), score_one_by_one(cold)  # warm-up
    rows: dict[str, list[float]] = {"turn2 reuse": [], "turn2 full": [], "mcq batch": [], "mcq singles": []}
    evaluated = {}
    for _ in range(args.runs):
        t, evaluated["reuse"] = second_turn(warm, True)
        rows["turn2 reuse"].append(t)
        t, evaluated["full"] = second_turn(cold, False)
        rows["turn2 full"].append(t)
        rows["mcq batch"].append(score_batch(warm))
        rows["mcq singles"].append(score_one_by_one(cold))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"build: {path}  threads: {warm.llm.n_threads}  runs: {args.runs}")
    print(f"second turn ({n_prompt} prompt tokens): time to first token, median")
    print(f"  cache reused : {med['turn2 reuse'] * 1000:8.1f} ms  ({evaluated['reuse']} tokens evaluated)")
    print(f"  no reuse     : {med['turn2 full'] * 1000:8.1f} ms  ({evaluated['full']} tokens evaluated)")
    print(f"  ratio        : {med['turn2 full'] / med['turn2 reuse']:8.2f}x")
    print("4-option MCQ score, median")
    print(f"  one batch    : {med['mcq batch'] * 1000:8.1f} ms")
    print(f"  one by one   : {med['mcq singles'] * 1000:8.1f} ms (cache cleared between options)")
    print(f"  ratio        : {med['mcq singles'] / med['mcq batch']:8.2f}x")
    warm.close()
    cold.close()


if __name__ == "__main__":
    main()
