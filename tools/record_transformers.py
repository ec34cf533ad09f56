#!/usr/bin/env python3
"""Record the router decisions of a Hugging Face transformers MoE model as
moetrace interchange JSONL, for families moetrace's own engine cannot run.

    python tools/record_transformers.py --model DIR_OR_HUB_ID --corpus FILE --out log.jsonl
    deno task moetrace import log.jsonl --out trace/

Every router module of the model is hooked (transformers 5's `*TopKRouter`
modules, which return (router_logits, weights, indices), except Granite's,
which returns (indices, weights, router_logits); or an older `nn.Linear` gate
that returns logits), and each document is run once, teacher-forced. For each
token and MoE layer the log holds the chosen experts, first choice first,
the gate weights the model applied, and the full router distribution `probs`
(softmax of the logits, or the sigmoid scores for routers that score with a
sigmoid, such as DeepSeek-V3's). First choice first means the router's own
selection order, as moetrace's engine and its goldens order them: by the
score the router chooses by (its probability, plus DeepSeek-V3's and
GLM-4.5's `e_score_correction_bias`, which chooses but does not weigh), ties
to the lower expert id. Several routers return their top k unsorted, and a
selection bias can rank experts differently from their weights, so neither
the returned order nor the weights' order will do. Nothing here runs inside
moetrace: this is a recipe, and moetrace reads only its output.

Corpus: a JSONL file whose lines hold "text" (tokenized with the model's
tokenizer) or "input_ids"/"tokens" (used as they are), and optionally
"domain" (or Pile's "meta": {"pile_set_name": ...}); or a plain text file,
one document per line.
"""

import argparse
import json
import re
import sys

import torch


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--corpus", required=True, help="JSONL (text or input_ids per line) or plain text")
    p.add_argument("--out", required=True, help="interchange JSONL to write")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per document, the rest cut")
    p.add_argument("--max-docs", type=int, default=None, help="stop after this many documents")
    p.add_argument("--no-probs", action="store_true", help="leave out the full router distribution")
    p.add_argument("--dtype", default="float32", help="torch dtype to run the model in")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--eager",
        action="store_true",
        help="eager attention and expert kernels (exact on CPU; the grouped kernels need sizes in multiples of 16 bytes)",
    )
    return p.parse_args(argv)


def documents(path, tokenizer, max_tokens):
    """Yields (domain, token ids) per document."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            domain = "text"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
                domain = str(row.get("domain") or meta.get("pile_set_name") or "unknown")
                ids = row.get("input_ids", row.get("tokens"))
                if ids is None:
                    if not isinstance(row.get("text"), str):
                        sys.exit(f"{path} line {number} has neither \"text\" nor \"input_ids\".")
                    ids = tokenizer(row["text"])["input_ids"]
            else:
                ids = tokenizer(line.rstrip("\n"))["input_ids"]
            ids = [int(i) for i in ids][:max_tokens]
            if ids:
                yield domain, ids


class RouterLog:
    """Forward hooks on every router module, collecting one forward pass."""

    def __init__(self, model, scoring):
        self.scoring = scoring
        self.outputs = {}
        self.modules = {}
        self.layers = []
        for name, module in model.named_modules():
            if not is_router(name, module):
                continue
            match = re.search(r"layers\.(\d+)\.", name)
            if not match:
                continue
            layer = int(match.group(1))
            if layer in self.layers:
                continue
            self.layers.append(layer)
            self.modules[layer] = module
            module.register_forward_hook(self.hook(layer))
        self.layers.sort()
        if not self.layers:
            sys.exit("No router modules found: is this a mixture-of-experts model?")

    def hook(self, layer):
        def record(_module, _inputs, output):
            self.outputs[layer] = output
        return record

    def decisions(self, k, num_experts, norm_topk):
        """Per MoE layer: (experts [T, k], weights [T, k], probs [T, E])."""
        out = []
        for layer in self.layers:
            output = self.outputs[layer]
            module = self.modules[layer]
            if isinstance(output, tuple):
                logits, weights, indices = router_output(module, output, num_experts)
            else:
                # An nn.Linear gate (transformers 4): softmax, top-k, renormalised if the model does.
                logits = output.reshape(-1, output.shape[-1]).float()
                weights, indices = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
                if norm_topk:
                    weights = weights / weights.sum(dim=-1, keepdim=True)
            probs = torch.sigmoid(logits) if self.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
            order = selection_order(module, logits, indices, self.scoring)
            out.append((indices.gather(1, order), weights.gather(1, order), probs))
        return out


def router_output(module, output, num_experts):
    """(logits [T, E], weights [T, k], indices [T, k]) of a router module's
    output tuple. transformers 5 routers return (router_logits, weights,
    indices), except Granite's GraniteMoeTopKRouter, which returns
    (indices, weights, router_logits): the integer tensor says which."""
    first, weights, last = output[0], output[1], output[2]
    if not first.is_floating_point():
        indices, logits = first, last
    else:
        logits, indices = first, last
    if indices.is_floating_point() or logits.shape[-1] != num_experts:
        sys.exit(
            f"{type(module).__name__} returned tensors of shapes {[tuple(x.shape) for x in output[:3]]}; "
            f"expected router logits over {num_experts} experts and integer expert indices."
        )
    logits = logits.reshape(-1, logits.shape[-1]).float()
    indices = indices.reshape(-1, indices.shape[-1]).long()
    weights = weights.reshape(-1, weights.shape[-1]).float()
    if weights.shape[-1] == num_experts and indices.shape[-1] != num_experts:
        weights = weights.gather(1, indices)  # dense scores: keep the chosen ones
    return logits, weights, indices


def selection_order(module, logits, indices, scoring):
    """[T, k] permutation putting each token's chosen experts in the router's
    selection order: descending by the score it chooses by (the softmax or
    sigmoid score, in float64, plus a selection-only `e_score_correction_bias`
    where the router has one; for routers that choose by logit the softmax
    ranks the same), equal scores by lower expert id."""
    logits = logits.double()
    scores = torch.sigmoid(logits) if scoring == "sigmoid" else torch.softmax(logits, dim=-1)
    bias = getattr(module, "e_score_correction_bias", None)
    if torch.is_tensor(bias):
        scores = scores + bias.double().to(scores.device)
    by_id = torch.argsort(indices, dim=-1)
    picked = scores.gather(1, indices.gather(1, by_id))
    # A stable descending sort of experts already in id order keeps the lower id first on ties.
    return by_id.gather(1, torch.argsort(picked, dim=-1, descending=True, stable=True))


def is_router(name, module):
    kind = type(module).__name__
    if kind.endswith("TopKRouter") or kind.endswith("TopkRouter") or kind.endswith("Router"):
        return True
    # transformers 4: the MoE block's gate is a plain nn.Linear named "gate" or "router".
    return isinstance(module, torch.nn.Linear) and re.search(r"\.(gate|router)$", name) is not None


def model_facts(config):
    text = getattr(config, "text_config", None) or config
    get = lambda *keys: next((getattr(text, key) for key in keys if getattr(text, key, None) is not None), None)
    hidden = get("hidden_size")
    ffn = get("moe_intermediate_size", "intermediate_size")
    shared = get("n_shared_experts", "num_shared_experts")
    if shared is None:
        shared = 1 if (get("shared_expert_intermediate_size") or 0) > 0 else 0
    return {
        "num_experts": get("num_local_experts", "num_experts", "n_routed_experts"),
        "top_k": get("num_experts_per_tok", "moe_top_k"),
        "hidden_size": hidden or 0,
        "expert_params": 3 * hidden * ffn if hidden and ffn else 0,
        "num_shared_experts": int(shared),
        "norm_topk": bool(get("norm_topk_prob")) or text.model_type == "mixtral",
        "scoring": get("scoring_func") or ("sigmoid" if text.model_type in ("deepseek_v3", "glm4_moe") else "softmax"),
        "family": text.model_type,
    }


def main(argv=None):
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, args.dtype)
    extra = {"attn_implementation": "eager", "experts_implementation": "eager"} if args.eager else {}
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, **extra).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    facts = model_facts(model.config)
    if not facts["num_experts"] or not facts["top_k"]:
        sys.exit(f"{args.model}'s config names no expert count or top-k: is it a mixture-of-experts model?")
    log = RouterLog(model, facts["scoring"])
    header = {
        "moetrace_import": 1,
        "num_layers": len(log.layers),
        "moe_layers": log.layers,
        "num_experts": facts["num_experts"],
        "top_k": facts["top_k"],
        "model": args.model.rstrip("/").split("/")[-1],
        "family": facts["family"],
        "hidden_size": facts["hidden_size"],
        "expert_params": facts["expert_params"],
        "num_shared_experts": facts["num_shared_experts"],
        "dtype": args.dtype,
        "mode": "teacher-forced",
    }
    count = 0
    with open(args.out, "w", encoding="utf-8") as out, torch.no_grad():
        out.write(json.dumps(header) + "\n")
        for domain, ids in documents(args.corpus, tokenizer, args.max_tokens):
            log.outputs.clear()
            model(input_ids=torch.tensor([ids], device=args.device))
            layers = log.decisions(facts["top_k"], facts["num_experts"], facts["norm_topk"])
            T = len(ids)
            doc = {
                "domain": domain,
                "tokens": ids,
                "pieces": [tokenizer.decode([i]) for i in ids],
                "experts": [[layers[m][0][t].tolist() for m in range(len(layers))] for t in range(T)],
                "weights": [[layers[m][1][t].tolist() for m in range(len(layers))] for t in range(T)],
            }
            if not args.no_probs:
                doc["probs"] = [[layers[m][2][t].tolist() for m in range(len(layers))] for t in range(T)]
            out.write(json.dumps(doc) + "\n")
            count += 1
            if args.max_docs is not None and count >= args.max_docs:
                break
    print(f"Recorded {count} documents from {args.model} into {args.out}.", file=sys.stderr)


if __name__ == "__main__":
    main()
