"""The one place where mtpchat talks ctypes: llama_cpp's low-level API plus the functions the
native patch adds (declared on the library handle that llama_cpp already loaded), and ggml's
own quantisers for `mtpchat convert`."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

import llama_cpp.llama_cpp as C

INSTALL_HINT = "run ./setup.sh (it builds llama-cpp-python with mtpchat's patches)"


def default_threads() -> int:
    """Threads a context gets when none are asked for: the physical cores this process may use,
    as llama.cpp's own tools count them (mtpchat/contention.py)."""
    from .contention import default_threads as physical

    return physical()


class LlamaError(RuntimeError):
    """llama.cpp refused a model, an adapter or a batch."""


class NotPatched(LlamaError):
    """The installed llama-cpp-python lacks mtpchat's native patch."""


def _bind(name: str, argtypes, restype):
    try:
        fn = getattr(C._lib, name)
    except AttributeError:
        raise NotPatched(f"llama-cpp-python is not patched for mtpchat (no {name}): {INSTALL_HINT}") from None
    fn.argtypes, fn.restype = argtypes, restype
    return fn


_token_p = ctypes.POINTER(C.llama_token)
_set_gate = _bind("llama_adapter_lora_set_gate_tokens", [C.llama_adapter_lora_p_ctypes, _token_p, ctypes.c_int32], ctypes.c_int32)
_n_gate = _bind("llama_adapter_lora_get_n_gate_tokens", [C.llama_adapter_lora_p_ctypes], ctypes.c_int32)
_get_gate = _bind("llama_adapter_lora_get_gate_tokens", [C.llama_adapter_lora_p_ctypes], _token_p)
_i32_p = ctypes.POINTER(ctypes.c_int32)
_f32_p = ctypes.POINTER(ctypes.c_float)
_head_init = _bind("llama_mtp_head_init",
                   [ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t,
                    ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t] + [_f32_p] * 8 + [ctypes.c_float, ctypes.c_int32],
                   ctypes.c_void_p)
_head_free = _bind("llama_mtp_head_free", [ctypes.c_void_p], None)
_draft = _bind("llama_mtp_draft", [C.llama_context_p_ctypes, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                   C.llama_token, _token_p, ctypes.c_int32, _token_p], ctypes.c_int32)
_step = _bind("llama_mtp_step",
              [C.llama_context_p_ctypes, ctypes.c_void_p, _token_p, ctypes.c_int32, _i32_p, ctypes.c_int32,
               _token_p, ctypes.c_int32, ctypes.c_int32, _token_p, ctypes.c_int32, _token_p, _token_p, _i32_p,
               ctypes.POINTER(ctypes.c_int64)], ctypes.c_int32)
_compute_us = _bind("llama_mtp_compute_us", [C.llama_context_p_ctypes], ctypes.c_int64)
_batch_invariant = _bind("llama_mtp_set_batch_invariant", [C.llama_context_p_ctypes, ctypes.c_bool], ctypes.c_bool)
_graph_head = _bind("llama_mtp_set_graph_head", [C.llama_context_p_ctypes, ctypes.c_bool], None)
_top_k = _bind("llama_mtp_top_k", [C.llama_context_p_ctypes, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
                                   ctypes.c_int32, _token_p, ctypes.c_int32, _token_p,
                                   ctypes.POINTER(ctypes.c_float)], ctypes.c_int32)

# llama.cpp logs to stderr by default: keep its recent lines to explain failures; show its
# warnings and errors with -v, and everything with MTPCHAT_LLAMA_LOG=1
_log_tail: list[str] = []
_verbose = False
_log_all = bool(os.environ.get("MTPCHAT_LLAMA_LOG"))
_last_level = 0


@C.llama_log_callback
def _log_cb(level, text, user_data):
    global _last_level
    if level != 5:  # 5 continues the previous line
        _last_level = level
    line = text.decode("utf-8", "replace")
    _log_tail.append(line)
    del _log_tail[:-20]
    if _log_all or (_verbose and _last_level in (3, 4)):  # ggml: 3 warn, 4 error
        os.write(2, text)


C.llama_log_set(_log_cb, ctypes.c_void_p(0))
C.llama_backend_init()


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = on


INT32_MAX = 2**31 - 1
GGML_MAX_N_THREADS = 512     # ggml.h: thread pools hold at most this many threads


def _c_int(name: str, value, lo: int, hi: int) -> int:
    """`value` checked before it goes into a ctypes field, which would silently truncate it
    (a context of 4294967360 tokens becomes 64)."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} {value!r} is out of range ({lo}..{hi})")
    return value


# a failed GGML_ASSERT calls abort() after printing a debugger backtrace (~150 lines); with this
# callback it prints one line and exits 1 instead. The checks in mtpchat/metadata.py are meant to
# keep every known assert from being reached: this is the net under them.
@ctypes.CFUNCTYPE(None, ctypes.c_char_p)
def _on_ggml_abort(message):
    text = (message or b"").decode("utf-8", "replace").strip().replace("\n", " ")
    os.write(2, f"mtpchat: error: llama.cpp stopped on a failed internal check: {text}\n".encode())
    os._exit(1)


def _install_abort_callback() -> None:
    try:
        lib = _ggml_base()
    except OSError:
        return
    lib.ggml_set_abort_callback.argtypes = [ctypes.c_void_p]
    lib.ggml_set_abort_callback.restype = ctypes.c_void_p
    lib.ggml_set_abort_callback(ctypes.cast(_on_ggml_abort, ctypes.c_void_p))


def _last_error(default: str) -> str:
    # "llama_model_load: error loading model: <the reason>" says more than the final "failed to load model"
    for line in reversed(_log_tail):
        if "error loading model: " in line:
            return line.strip().split("error loading model: ", 1)[1]
    for line in reversed(_log_tail):
        line = line.strip()
        if line and ("error" in line.lower() or "failed" in line.lower() or "exception" in line.lower()):
            return line.split(": ", 1)[-1] if ": " in line else line
    return default


class Model:
    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0, vocab_only: bool = False):
        from . import metadata
        from .format import FormatError

        # llama.cpp asserts (aborts the process) on some metadata values: check them first
        try:
            metadata.check_file(path)
        except FormatError as e:
            raise LlamaError(str(e)) from None
        params = C.llama_model_default_params()
        params.n_gpu_layers = _c_int("n_gpu_layers", n_gpu_layers, -1, INT32_MAX)
        params.vocab_only = vocab_only
        # ggml's AMX weight buffers crash the first matrix product on Sapphire Rapids CPUs in the
        # pinned llama.cpp (upstream issue ggml-org/llama.cpp#20824): keep plain CPU buffers there
        params.use_extra_bufts = not _cpu_has_amx()
        self.path = str(path)
        _log_tail.clear()
        self.ptr = C.llama_model_load_from_file(self.path.encode(), params)
        if not self.ptr:
            raise LlamaError(f"llama.cpp could not load {path}: {_last_error('unknown error')}")
        self.vocab = C.llama_model_get_vocab(self.ptr)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_embd = C.llama_model_n_embd(self.ptr)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.ptr)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def close(self) -> None:
        if self.ptr:
            C.llama_model_free(self.ptr)
            self.ptr = None

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8", "replace")   # a lone surrogate (from argv, say) becomes '?'
        n_max = len(data) + 8
        buf = (C.llama_token * n_max)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (C.llama_token * n_max)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def _token(self, token: int) -> int:
        # llama.cpp indexes its vocabulary with .at(): an id outside it throws through the C API
        # and ends the process (std::terminate)
        if not 0 <= token < self.n_vocab:
            raise LlamaError(f"token id {token} is outside the vocabulary ({self.n_vocab} tokens)")
        return token

    def piece(self, token: int) -> bytes:
        """Bytes of one token as text (control tokens give b'')."""
        p = self._pieces.get(token)
        if p is None:
            self._token(token)
            buf = ctypes.create_string_buffer(64)
            n = C.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = C.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    def token_text(self, token: int) -> str:
        """The vocabulary entry of a token, control tokens included (e.g. '<|im_end|>')."""
        t = C.llama_vocab_get_text(self.vocab, self._token(token))
        return t.decode("utf-8", "replace") if t else ""

    def is_eog(self, token: int) -> bool:
        # asked for every generated token: a ctypes call costs several microseconds
        e = self._eog.get(token)
        if e is None:
            e = self._eog[token] = bool(C.llama_vocab_is_eog(self.vocab, token))
        return e

    @property
    def bos(self) -> int:
        """The vocabulary's BOS token as llama.cpp resolved it (-1: none); never the raw metadata."""
        return C.llama_vocab_bos(self.vocab)

    @property
    def eos(self) -> int:
        return C.llama_vocab_eos(self.vocab)

    @property
    def end_of_turn(self) -> int:
        """The token that ends a turn: the vocabulary's EOT, else its EOS; -1 when it has neither."""
        eot = C.llama_vocab_eot(self.vocab)
        return eot if eot >= 0 else C.llama_vocab_eos(self.vocab)

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        t = C.llama_model_chat_template(self.ptr, None)
        return t.decode("utf-8", "replace") if t else None

    @property
    def size(self) -> int:
        return C.llama_model_size(self.ptr)

    @property
    def n_params(self) -> int:
        return C.llama_model_n_params(self.ptr)


class Adapter:
    """A LoRA adapter from an adapter GGUF, or the gated adapter inside an MTP model file."""

    def __init__(self, model: Model, path: str | Path | None = None):
        if path is not None and str(path) != model.path:
            _check_adapter_file(path, model.n_vocab)
        # an MTP model file's adapter values were checked with the model (metadata.check)
        _log_tail.clear()
        self.ptr = C.llama_adapter_lora_init(model.ptr, str(path or model.path).encode())
        if not self.ptr:
            raise LlamaError(f"llama.cpp could not load the adapter in {path or model.path}: {_last_error('unknown error')}")

    @property
    def gate_tokens(self) -> list[int] | None:
        """The gate set, or None when the adapter is ungated (applies to every token)."""
        n = _n_gate(self.ptr)
        if n < 0:
            return None
        ptr = _get_gate(self.ptr)
        return [ptr[i] for i in range(n)]

    @gate_tokens.setter
    def gate_tokens(self, ids: list[int] | None) -> None:
        if ids is None:
            _set_gate(self.ptr, None, -1)
        else:
            arr = (C.llama_token * max(len(ids), 1))(*ids)
            _set_gate(self.ptr, arr, len(ids))

    def close(self) -> None:
        # the model frees its adapters; free early only while it is alive
        if self.ptr:
            C.llama_adapter_lora_free(self.ptr)
            self.ptr = None


def _check_adapter_file(path, n_vocab: int) -> None:
    """The values the native adapter loader reads from a stand-alone adapter GGUF: alpha (finite:
    it scales every gated-off token's zero too), gate ids in the vocabulary, finite matrices."""
    from . import format as F

    g = F.open_gguf(path, check=False)
    if g.kv.get("general.type") != "adapter" or g.kv.get("adapter.type") != "lora":
        raise F.FormatError(f"{path} is not a LoRA adapter GGUF")
    if "adapter.lora.alpha" in g.kv:
        F.check_alpha(g.kv["adapter.lora.alpha"])
    gate = g.kv.get("adapter.lora.gate_token_ids")
    if gate is not None and (not isinstance(gate, list) or
                             not all(isinstance(i, int) and 0 <= i < n_vocab for i in gate)):
        raise F.FormatError(f"{path}: adapter.lora.gate_token_ids must list token ids of the vocabulary")
    for name, t in g.tensors.items():
        if name.endswith((".lora_a", ".lora_b")) and t.type.name in ("F32", "F16"):
            F.check_values(name, t.data, F.LORA_ABS_MAX)


class MtpHead:
    """The sampler head in C (llama_mtp_head_init): its weights are copied; the token embedding
    and output matrices are read in place from the GGUF's memory map, which this object keeps
    open. shortlist 1 drafts the top mask logit."""

    def __init__(self, g, sampler: dict, eps: float, *, shortlist: int):
        from . import format as F

        self.ptr = None
        unembd = g.tensors["output.weight" if "output.weight" in g.tensors else "token_embd.weight"]
        embd = g.tensors["token_embd.weight"]
        d = embd.shape[1]
        self._g = g   # the map the head reads from
        self._weights = [np.ascontiguousarray(sampler[n], dtype=np.float32) for n in F.SAMPLER_TENSORS]
        for name, w in zip(F.SAMPLER_TENSORS, self._weights):
            if w.shape != F.sampler_shapes(d)[name]:
                raise LlamaError(f"sampler tensor {name} has shape {w.shape}, expected {F.sampler_shapes(d)[name]}")
        for t in (embd, unembd):
            if t.shape != (embd.shape[0], d):
                raise LlamaError(f"{t.name} has shape {t.shape}, expected {(embd.shape[0], d)}")
        ptrs = [w.ctypes.data_as(_f32_p) for w in self._weights]
        self.ptr = _head_init(d, embd.shape[0], embd.data.ctypes.data, int(embd.type), embd.nbytes,
                              unembd.data.ctypes.data, int(unembd.type), unembd.nbytes, *ptrs,
                              eps, shortlist)
        if not self.ptr:
            raise LlamaError("llama_mtp_head_init rejected the sampler head")

    def close(self) -> None:
        if self.ptr:
            _head_free(self.ptr)
            self.ptr = None

    def __del__(self):
        self.close()


STEP_MAX_TOKENS = 256   # the longest chain, or mask block, one native step takes


class Context:
    """A llama_context with one reusable batch. Sequences share a unified KV cache so that a
    token may belong to several sequences (tree verification)."""

    def __init__(self, model: Model, *, n_ctx: int = 2048, n_batch: int = 512, n_threads: int | None = None,
                 n_seq_max: int = 1, embeddings: bool = False):
        params = C.llama_context_default_params()
        params.n_ctx = _c_int("the context size", n_ctx, 1, INT32_MAX)
        params.n_batch = _c_int("the batch size", n_batch, 1, INT32_MAX)
        params.n_ubatch = n_batch
        params.n_seq_max = _c_int("n_seq_max", n_seq_max, 1, 256)
        params.kv_unified = True
        params.embeddings = embeddings
        threads = n_threads or default_threads()
        _c_int("the thread count", threads, 1, GGML_MAX_N_THREADS)
        params.n_threads = threads
        params.n_threads_batch = threads
        self.model = model
        self.n_threads = threads
        _log_tail.clear()
        self.ptr = C.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise LlamaError(f"llama.cpp could not create a context: {_last_error('unknown error')}")
        self.n_ctx = C.llama_n_ctx(self.ptr)
        self.n_batch = C.llama_n_batch(self.ptr)  # llama.cpp caps it at the requested context
        self.n_seq_max = n_seq_max
        self.mem = C.llama_get_memory(self.ptr)
        self._embeddings = embeddings
        self._adapter = None
        self.batch = C.llama_batch_init(n_batch, 0, n_seq_max)
        b = self.batch
        self._tok = np.ctypeslib.as_array(b.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n_batch,))
        self._nseq = np.ctypeslib.as_array(b.n_seq_id, shape=(n_batch,))
        self._out = np.ctypeslib.as_array(ctypes.cast(b.logits, ctypes.POINTER(ctypes.c_int8)), shape=(n_batch,))
        self._seq = [np.ctypeslib.as_array(b.seq_id[i], shape=(n_seq_max,)) for i in range(n_batch)]
        self.set_banned([])
        # llama_mtp_step's arguments, allocated once: chain, blocks, drafts, masks, new tokens
        width = min(n_batch, STEP_MAX_TOKENS)
        self._step_io = ((C.llama_token * width)(), (ctypes.c_int32 * n_seq_max)(), (C.llama_token * width)(),
                         (C.llama_token * width)(), (C.llama_token * width)(), ctypes.c_int32(0), ctypes.c_int64(0))

    def set_n_threads(self, n: int) -> None:
        """Threads for the next passes (single-token and batch alike), without a new context."""
        _c_int("the thread count", n, 1, GGML_MAX_N_THREADS)
        C.llama_set_n_threads(self.ptr, n, n)
        self.n_threads = n

    def close(self) -> None:
        if self.ptr:
            C.llama_batch_free(self.batch)
            C.llama_free(self.ptr)
            self.ptr = None

    def set_adapter(self, adapter: Adapter | None) -> None:
        if adapter is self._adapter:
            return
        if adapter is None:
            C.llama_set_adapters_lora(self.ptr, None, 0, None)
        else:
            # alpha is stored in the adapter: the user scale stays 1 so scaling is applied once
            arr = (C.llama_adapter_lora_p_ctypes * 1)(adapter.ptr)
            scales = (ctypes.c_float * 1)(1.0)
            C.llama_set_adapters_lora(self.ptr, arr, 1, scales)
        self._adapter = adapter

    def set_batch_invariant(self, on: bool) -> bool:
        """The CPU backend's reference kernels (llama_mtp_set_batch_invariant): a row's logits then
        do not depend on its pass's size. False when the context has no CPU backend."""
        return bool(_batch_invariant(self.ptr, on))

    def set_graph_head(self, on: bool) -> None:
        """Greedy steps verify and draft inside the pass's graph (on, the default: only token ids
        leave the backend) or on the host from the pass's logits (llama_mtp_set_graph_head)."""
        _graph_head(self.ptr, on)

    def set_embeddings(self, on: bool) -> None:
        if on != self._embeddings:
            C.llama_set_embeddings(self.ptr, on)
            self._embeddings = on

    def decode(self, tokens, pos, seq_ids=None, outputs=None) -> int:
        """Evaluate one batch. seq_ids: per token a list of sequence ids (default [0]);
        outputs: per token whether to return its logits (default: the last one). Returns n_outputs."""
        n = len(tokens)
        if n == 0 or n > self.n_batch:
            raise LlamaError(f"batch of {n} tokens (limit {self.n_batch})")
        self._tok[:n] = tokens
        self._pos[:n] = pos
        if seq_ids is None:
            self._nseq[:n] = 1
            for i in range(n):
                self._seq[i][0] = 0
        else:
            for i, ids in enumerate(seq_ids):
                self._nseq[i] = len(ids)
                self._seq[i][:len(ids)] = ids
        if outputs is None:
            self._out[:n] = 0
            self._out[n - 1] = 1
        else:
            self._out[:n] = outputs
        self.batch.n_tokens = n
        rc = C.llama_decode(self.ptr, self.batch)
        if rc != 0:
            raise LlamaError(f"llama_decode failed ({rc}): {_last_error('the context may be full')}")
        # hidden states follow the output flags too (native/patches/0004)
        return int(self._out[:n].sum())

    def logits(self, n_out: int) -> np.ndarray:
        """Logits of the last decode's outputs, in batch order: a view valid until the next decode."""
        p = C.llama_get_logits(self.ptr)
        if not p:  # a native step read its pass's logits in place
            raise LlamaError("the last pass left no logits to read")
        return np.ctypeslib.as_array(p, shape=(n_out, self.model.n_vocab))

    def hidden(self, n_out: int) -> np.ndarray:
        """Final-norm hidden states of the last decode's outputs (embeddings must be on)."""
        p = C.llama_get_embeddings(self.ptr)
        if not p:  # a native step drafted inside its pass's graph
            raise LlamaError("the last pass left no hidden states to read")
        return np.ctypeslib.as_array(p, shape=(n_out, self.model.n_embd))

    def set_banned(self, ids) -> None:
        self._banned = np.ascontiguousarray(ids, dtype=np.int32)
        self._banned_p = self._banned.ctypes.data_as(_token_p)

    @property
    def compute_s(self) -> float:
        """Seconds this context has spent in the backends' graph compute (synchronised)."""
        return _compute_us(self.ptr) / 1e6

    def top_k(self, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest logits of output rows 0..n_rows-1 of the last decode, mask ids excluded,
        best first (llama_mtp_top_k): (ids, logits), each n_rows x k; -1 / -inf past the end."""
        rows = np.arange(n_rows, dtype=np.int32)
        ids = np.empty((n_rows, k), dtype=np.int32)
        vals = np.empty((n_rows, k), dtype=np.float32)
        if _top_k(self.ptr, rows.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), n_rows, k, self._banned_p,
                  len(self._banned), ids.ctypes.data_as(_token_p), vals.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) < 0:
            raise LlamaError("the last pass left no logits to read")
        return ids, vals

    def mtp_draft(self, head: MtpHead, row0: int, n: int, prev: int) -> list[int]:
        """n drafts from the mask rows row0.. of the last decode (llama_mtp_draft)."""
        out = self._step_io[2]
        if not 0 <= n <= len(out) or _draft(self.ptr, head.ptr, row0, n, prev, self._banned_p, len(self._banned), out) != n:
            raise LlamaError("llama_mtp_draft rejected its arguments")
        return out[:n]

    def mtp_step(self, head: MtpHead | None, chain, blocks, mask_ids, n_masks: int, p0: int):
        """One greedy step in C (llama_mtp_step): returns (new tokens, accepted drafts, next
        drafts, host seconds). The cache holds exactly the committed tokens afterwards."""
        chain_a, blocks_a, drafts_a, masks_a, new_a, n_drafts, host_us = self._step_io
        n_chain = len(chain)
        if not 0 < n_chain <= len(chain_a) or len(blocks) > len(blocks_a) or n_masks > len(masks_a):
            raise LlamaError("llama_mtp_step: the tree is larger than this context's step buffers")
        chain_a[:n_chain] = chain
        blocks_a[:len(blocks)] = blocks
        masks_a[:n_masks] = mask_ids[:n_masks]
        a = _step(self.ptr, head.ptr if head is not None else None, chain_a, n_chain, blocks_a, len(blocks),
                  masks_a, n_masks, p0, self._banned_p, len(self._banned), new_a, drafts_a, n_drafts, host_us)
        self._embeddings = bool(blocks)   # the step switches hidden states on only for blocks
        if a == -1:
            raise LlamaError("llama_mtp_step rejected its arguments")
        if a < -1:
            raise LlamaError(f"llama_decode failed ({-2 - a}): {_last_error('the context may be full')}")
        return new_a[:a + 1], a, drafts_a[:n_drafts.value], host_us.value / 1e6

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(C.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        C.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def seq_pos_max(self, seq: int) -> int:
        return C.llama_memory_seq_pos_max(self.mem, seq)

    def clear(self) -> None:
        C.llama_memory_clear(self.mem, True)


# -- quantisation (mtpchat convert) ------------------------------------------------------------

# --outtype / test names -> llama.cpp file types for llama_model_quantize
QUANT_FTYPES = {"q4_0": C.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": C.LLAMA_FTYPE_MOSTLY_Q8_0,
                "q4_k_m": C.LLAMA_FTYPE_MOSTLY_Q4_K_M, "f16": C.LLAMA_FTYPE_MOSTLY_F16}


def quantize_model(src: str | Path, dst: str | Path, ftype: str, n_threads: int | None = None, *,
                   requantize: bool = False) -> None:
    """Quantise the GGUF `src` to `dst` with llama.cpp's own quantiser, as llama-quantize runs it
    (its per-tensor type choices included). `ftype` is a key of QUANT_FTYPES."""
    params = C.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[ftype]
    params.nthread = n_threads or os.cpu_count() or 1
    # re-encoding an already quantised file (e.g. Q4_1 -> Q8_0): llama-quantize --allow-requantize
    params.allow_requantize = requantize
    _log_tail.clear()
    rc = C.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not Path(dst).is_file():
        raise LlamaError(f"llama.cpp could not quantise {src} to {ftype.upper()}: {_last_error('unknown error')}")


_ggml = None


def _loaded(name: str) -> list[Path]:
    """Files of shared libraries named like `name` that this process has mapped (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if name in line}
    except OSError:
        return []
    return [Path(p) for p in sorted(paths) if p.startswith("/") and Path(p).name.startswith(f"lib{name}.")]


def _ggml_lib(name: str) -> ctypes.CDLL:
    folder = Path(C._lib._name).parent
    # wheels hold copies, not symlinks, of libggml-base.so{,.0,.0.x}: take the copy libllama
    # loaded (another copy would be a second library with its own state)
    cands = _loaded(name) + sorted(folder.glob(f"lib{name}.*")) + sorted(folder.glob(f"{name}.*"))
    if not cands:
        raise OSError(f"lib{name} not found next to {C._lib._name}")
    return ctypes.CDLL(str(cands[0]))


_amx = None


def _cpu_has_amx() -> bool:
    """Whether ggml's CPU backend was built with AMX kernels (and so offers AMX weight buffers)."""
    global _amx
    if _amx is None:
        try:
            lib = _ggml_lib("ggml-cpu")
            lib.ggml_cpu_has_amx_int8.restype = ctypes.c_int
            _amx = bool(lib.ggml_cpu_has_amx_int8())
        except (OSError, AttributeError):   # a build without a separate CPU library
            _amx = False
    return _amx


def _ggml_base():
    """libggml-base, loaded by libllama and lying next to it: gguf-py quantises only the simple
    block types (Q4_0 ... Q8_0); K-quants and IQ types need ggml's C code, and this way the same
    library (so the same rounding) that reads a model's rows writes the new ones."""
    global _ggml
    if _ggml is None:
        lib = _ggml_lib("ggml-base")
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_row_size.restype = ctypes.c_size_t
        _ggml = lib
    return _ggml


def quantize_rows(rows: np.ndarray, qtype: int) -> np.ndarray:
    """`rows` (n, n_per_row) float32 as ggml type `qtype` (ggml_quantize_chunk): uint8 array
    (n, row_bytes).

    Raises NotImplementedError for types that need an importance matrix (IQ1/IQ2 ...): rows made
    without one would be poor, and there is none."""
    lib = _ggml_base()
    qtype = int(qtype)
    if lib.ggml_quantize_requires_imatrix(qtype):
        raise NotImplementedError("this type needs an importance matrix")
    src = np.ascontiguousarray(rows, dtype=np.float32)
    n, n_per_row = src.shape
    row_bytes = lib.ggml_row_size(qtype, n_per_row)
    dst = np.zeros((n, row_bytes), dtype=np.uint8)
    written = lib.ggml_quantize_chunk(qtype, src.ctypes.data, dst.ctypes.data, 0, n, n_per_row, None)
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {dst.nbytes}")
    return dst


_install_abort_callback()
