#!/usr/bin/env python3
"""The official OpenAI Python client against a running honed (ops/test starts one):
lists models, completes, streams, uses an adapter, and gets the right exception types.

Usage: openai_client.py BASE_URL ADAPTER_NAME
Prints one JSON summary line; exits 1 on the first failed check.
"""
import json, sys, time, urllib.request
import openai

base_url, adapter = sys.argv[1], sys.argv[2]
deadline = time.time() + 120
while True:
    try:
        with urllib.request.urlopen(base_url + "/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("honed did not become ready within 120 s")
    time.sleep(0.5)

client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
checks = []


def check(name, condition, detail=""):
    checks.append(name)
    if not condition:
        print(json.dumps({"failed": name, "detail": str(detail)}))
        sys.exit(1)


ids = [m.id for m in client.models.list()]
base = ids[0]
check("models: base and base:adapter", f"{base}:{adapter}" in ids, ids)

messages = [{"role": "user", "content": "What is the capital of France?"}]
answer = client.chat.completions.create(model=base, messages=messages, max_tokens=8, temperature=0)
text = answer.choices[0].message.content
check("chat completion", answer.object == "chat.completion" and text and answer.usage.completion_tokens > 0, answer)
check("fingerprint names the base version", answer.system_fingerprint == "base", answer.system_fingerprint)

chunks = list(client.chat.completions.create(model=base, messages=messages, max_tokens=8, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("stream equals the whole answer", streamed == text, (streamed, text))
check("stream ends with usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens)

adapted = client.chat.completions.create(model=f"{base}:{adapter}", messages=messages, max_tokens=8, temperature=0)
check("adapter answers with its version", adapted.system_fingerprint == f"{adapter}@local", adapted.system_fingerprint)

completion = client.completions.create(model=base, prompt="The capital of France is", max_tokens=4, temperature=0)
check("text completion", completion.object == "text_completion" and completion.choices[0].text, completion)

def raises(kind, call):
    try:
        call()
    except kind as error:
        return error
    except Exception as error:
        return None
    return None

e = raises(openai.NotFoundError, lambda: client.chat.completions.create(model="no-such-model", messages=messages))
check("unknown model -> NotFoundError", e is not None and e.code == "model_not_found", e)
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=base, messages=messages, max_tokens=-1))
check("negative max_tokens -> BadRequestError", e is not None, e)
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=base, messages=[]))
check("empty messages -> BadRequestError", e is not None, e)
e = raises(openai.APIStatusError, lambda: client.chat.completions.create(model=base, messages=[{"role": "user", "content": "x" * 2_000_000}]))
check("huge body -> 413", e is not None and e.status_code == 413, e)
after = client.chat.completions.create(model=base, messages=messages, max_tokens=8, temperature=0)
check("still serving, same answer", after.choices[0].message.content == text)
print(json.dumps({"openai_client": openai.__version__, "checks_passed": len(checks), "answer": text}))
