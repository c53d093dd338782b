"""Server settings: tenshu.toml, flags over the file, and one clear error per mistake."""

from __future__ import annotations

import math

import pytest

from tenshu.config import (
    DEFAULT_MODEL_NAME,
    DEFAULT_PORT,
    ModelSpec,
    ServerSettings,
    load_server_settings,
    parse_model_arg,
)


def test_defaults_serve_the_built_in_model_on_loopback(tmp_path):
    settings = load_server_settings(None)
    assert settings.host == "127.0.0.1" and settings.port == DEFAULT_PORT
    assert DEFAULT_PORT not in (11434, 1234, 8000)
    assert [m.name for m in settings.served_models()] == [DEFAULT_MODEL_NAME]


def test_file_then_flags(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text('[server]\nport = 9001\ncors_origins = ["http://localhost:3000"]\n'
                    '[[models]]\nname = "qwen"\npath = "/models/Qwen3-0.6B"\n')
    settings = load_server_settings(file, port=9002, host=None)
    assert settings.port == 9002  # the flag wins
    assert settings.cors_origins == ("http://localhost:3000",)
    assert settings.models == (ModelSpec("qwen", "/models/Qwen3-0.6B"),)


@pytest.mark.parametrize("text, key", [
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\nprot = 1\n", "prot"),
    ("[server]\nmax_queue = -1\n", "server.max_queue"),
    ("[server]\nmax_connections = 0\n", "server.max_connections"),
    ("[server]\nheader_timeout = 0\n", "server.header_timeout"),
    ("[server]\nbody_min_kib_per_s = -1\n", "server.body_min_kib_per_s"),
    ("[server]\nkeep_alive = true\n", "server.keep_alive"),
    ('[server]\ncors_origins = "*"\n', "server.cors_origins"),
    ("[[models]]\nname = 'x'\n", "models.x: needs a path"),
    ('[server]\nquantization = "int3"\n', "server.quantization: must be one of int8, int4"),
    ("[[models]]\nname = 'x'\npath = '/m'\nquantization = 'q2'\n", "models.x.quantization: must be one of"),
    ('[server]\nmodel_keep_alive = "soon"\n', "server.model_keep_alive: 'soon' is not a"),
    ("[server]\nload_timeout = 0\n", "server.load_timeout"),
    ("[[models]]\nname = 'x'\npath = '/m'\nkeep_alive = '5 min'\n", "models.x.keep_alive"),
    ("[server\n", "not valid TOML"),
])
def test_a_bad_file_is_one_error_naming_the_key(tmp_path, text, key):
    file = tmp_path / "tenshu.toml"
    file.write_text(text)
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_server_settings(file)


def test_keep_alive_defaults_to_forever_unless_set(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text("[[models]]\nname = 'a'\npath = '/a'\n"
                    "[[models]]\nname = 'b'\npath = '/b'\nkeep_alive = -1\n"
                    "[[models]]\nname = 'c'\npath = '/c'\nkeep_alive = 30\n")
    settings = load_server_settings(file)
    a, b, c = settings.models
    assert settings.model_keep_alive_for(a) == math.inf  # tenshu's default: always on
    assert settings.model_keep_alive_for(b) == math.inf and settings.model_keep_alive_for(c) == 30
    file.write_text('[server]\nmodel_keep_alive = "5m"\n' + file.read_text())
    settings = load_server_settings(file)
    assert [settings.model_keep_alive_for(m) for m in settings.models] == [300, math.inf, 30]


def test_a_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_server_settings(tmp_path / "nope.toml")


def test_keys_cannot_be_turned_off_beyond_loopback():
    with pytest.raises(ValueError, match="required beyond loopback"):
        ServerSettings(host="0.0.0.0", require_keys=False)
    assert ServerSettings(host="127.0.0.1", require_keys=False).loopback
    # beyond loopback they are required whatever exists; on loopback, as configured
    assert ServerSettings(host="0.0.0.0").keys_required is True
    assert ServerSettings(host="192.168.1.2", require_keys=None).keys_required is True
    assert ServerSettings().keys_required is None
    assert ServerSettings(require_keys=False).keys_required is False


def test_model_arguments(tmp_path):
    assert parse_model_arg(f"{tmp_path}/Qwen3-0.6B").name == "Qwen3-0.6B"
    assert parse_model_arg("q=/m/x") == ModelSpec("q", "/m/x")


def test_quantization_per_model_or_for_the_server(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text('[server]\nquantization = "int8"\n[[models]]\npath = "/m/a"\n'
                    'quantization = "int4"\n[[models]]\npath = "/m/b"\n')
    settings = load_server_settings(file)
    assert settings.quantization == "int8"
    assert [m.quantization for m in settings.models] == ["int4", ""]  # "": the server's
    assert load_server_settings(file, quantization="awq").quantization == "awq"  # --quantization


def test_int8_activations_for_the_server(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text("[server]\n")
    assert load_server_settings(file).int8_activations is True  # llama.cpp's default
    file.write_text("[server]\nint8_activations = false\n")
    assert load_server_settings(file).int8_activations is False
    assert load_server_settings(file, int8_activations=True).int8_activations is True  # flag
    file.write_text('[server]\nint8_activations = "yes"\n')
    with pytest.raises(ValueError, match="server.int8_activations must be true or false"):
        load_server_settings(file)


def test_kv_cache_dtype_for_the_server(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text('[server]\nkv_cache_dtype = "bfloat16"\n')
    assert load_server_settings(file).kv_cache_dtype == "bfloat16"
    assert load_server_settings(file, kv_cache_dtype="auto").kv_cache_dtype == "auto"  # the flag
    file.write_text('[server]\nkv_cache_dtype = "fp8"\n')
    with pytest.raises(ValueError, match="server.kv_cache_dtype: must be auto, bfloat16"):
        load_server_settings(file)
