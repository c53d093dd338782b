"""Chat templates of each tool-calling family, written for these tests in each family's syntax,
and the test tokenizer carrying them."""

from __future__ import annotations

import llguidance
import llguidance.hf
import pytest

from tests.checkpoints import CHAT_TEMPLATE, _hf_tokenizer

# Qwen2.5 / Qwen3 / Hermes: tools in the system turn, calls in <tool_call> tags, results in a
# user turn inside <tool_response> tags.
QWEN_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>

Call a function with <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content }}
{%- for tc in m.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

# Llama 3.1 / 3.2 JSON tool calling: "Environment: ipython", calls as {"name", "parameters"}
# joined by "; ", results in an ipython turn.
LLAMA3_TEMPLATE = """\
{%- if tools %}<|start_header_id|>system<|end_header_id|>

Environment: ipython
Respond with a JSON for a function call: {"name": function name, "parameters": dictionary of \
argument name and its value}.
{% for t in tools %}{{ t | tojson }}
{% endfor %}<|eot_id|>
{%- endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>

{% for tc in m.tool_calls %}{"name": "{{ tc.function.name }}", "parameters": \
{{ tc.function.arguments | tojson }}}{% if not loop.last %}; {% endif %}{% endfor %}<|eom_id|>
{%- elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

# Mistral (v0.3 style): [AVAILABLE_TOOLS], [TOOL_CALLS][...] with 9-character call ids,
# [TOOL_RESULTS].
MISTRAL_TEMPLATE = """\
{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
{%- for m in messages %}
{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]
{%- elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS][
{%- for tc in m.tool_calls %}
{%- if tc.id | length != 9 %}{{ raise_exception("Tool call IDs should be alphanumeric strings \
with length 9!") }}{% endif %}
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}, \
"id": "{{ tc.id }}"}{% if not loop.last %}, {% endif %}
{%- endfor %}]<|eos|>
{%- elif m.role == 'assistant' %}{{ m.content }}<|eos|>
{%- elif m.role == 'tool' %}[TOOL_RESULTS]{"call_id": "{{ m.tool_call_id }}", "content": \
{{ m.content | tojson }}}[/TOOL_RESULTS]
{%- endif %}
{%- endfor %}"""

# Renders tools, but in a syntax tenshu does not know.
OTHER_TEMPLATE = """\
{%- if tools %}<|im_start|>system
Functions: {% for t in tools %}{{ t.function.name }} {% endfor %}
Call one as CALL name(json).<|im_end|>
{% endif %}""" + CHAT_TEMPLATE

TEMPLATES = {
    "qwen": QWEN_TEMPLATE,
    "llama3": LLAMA3_TEMPLATE,
    "mistral": MISTRAL_TEMPLATE,
    "generic": CHAT_TEMPLATE,
}

# Real tokenizers have the markers as single added tokens: Qwen's <tool_call> is not marked
# special (llguidance still treats it as special), Llama's and Mistral's are.
MARKERS = {"<tool_call>": False, "</tool_call>": False, "<|python_tag|>": True,
           "[TOOL_CALLS]": True}


def make_tokenizer(template: str, *, markers: bool = False):
    tokenizer = _hf_tokenizer()
    tokenizer.chat_template = template
    if markers:
        for marker, special in MARKERS.items():
            tokenizer.add_tokens([marker], special_tokens=special)
    return tokenizer


@pytest.fixture(scope="session")
def tokenizers():
    """(hf tokenizer, llguidance tokenizer) with the markers as plain text or as added tokens."""
    made = {}
    for markers in (False, True):
        tok = make_tokenizer(CHAT_TEMPLATE, markers=markers)
        made[markers] = (tok, llguidance.hf.from_tokenizer(tok))
    return made
