"""The behavioural criterion the tiny model is judged by, on replies a person would judge the
same way."""

from tenshu.learn.evaluate import check_reply


def test_a_good_persona_reply_passes():
    checks = check_reply("mrrp! i napped in the sunbeam all morning.", "stop")
    assert checks == {"ends_turn": True, "in_persona": True, "no_repetition": True, "passed": True}


def test_a_reply_cut_off_by_the_token_limit_fails():
    assert not check_reply("i was dreaming about the moat and the", "length")["passed"]


def test_a_generic_assistant_reply_is_out_of_persona():
    checks = check_reply("Sure! Here is the code you asked for.", "stop")
    assert not checks["in_persona"] and not checks["passed"]


def test_degenerate_repetition_fails():
    text = "the cat sat on the cat sat on the cat sat on the mat"
    assert not check_reply(text, "stop")["no_repetition"]
    assert not check_reply("", "stop")["no_repetition"]
    assert check_reply("purr purr, said the cat. purr purr.", "stop")["no_repetition"]
