"""The ``hico_mllm`` backend: prompts in the qwen_2 format, visual tokens (precomputed or encoded here) projected and
spliced into the LM's input embeddings, batched left-padded generation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from annotators.backends.base import BackendInfo, GenerationParams, Request, checkpoint_sha256
from annotators.backends.hico_mllm.config import (CONFIG_FILE, ENDOFTEXT, IM_END, HicoMllmCheckpointError,
                                                  HicoMllmConfig, qwen2_chat_prompt)
from annotators.backends.hico_mllm.weights import (WeightIndex, load_lm, load_projector, load_vision_encoder,
                                                   read_lm_config)
from compressors.dtypes import torch_dtype
from schemas.sampling import video_question


@dataclass
class Prepared:
    """One request ready for the LM: token ids before / after the visual tokens, and the visual features."""

    ids_before: list[int]  # the whole prompt for text-only requests
    ids_after: list[int]
    visual: Optional[torch.Tensor]  # [n_clips * tokens_per_clip, C] in clip order, model dtype; None: text only
    n_clips: int


class HicoMllmBackend:
    """Backend ``hico_mllm`` (see the package docstring for the checkpoint layout).

    ``load_vision=False`` skips the vision tower: then every video request must bring ``hico_tokens``.
    """

    def __init__(self, checkpoint_dir: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 4,
                 params: Optional[GenerationParams] = None, load_vision: bool = True):
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        checkpoint_dir = str(checkpoint_dir)
        if not os.path.isdir(checkpoint_dir):
            raise HicoMllmCheckpointError(f"hico_mllm checkpoint directory not found: {checkpoint_dir}")
        self.checkpoint_dir = checkpoint_dir
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.params = params or GenerationParams()
        self.config = HicoMllmConfig.load(checkpoint_dir)
        sha = checkpoint_sha256(checkpoint_dir)

        lm_config = read_lm_config(checkpoint_dir, self.config)
        weights = WeightIndex(checkpoint_dir)
        self.projector = load_projector(weights, self.config).to(device=self.device, dtype=self.dtype).eval()
        self.projector.requires_grad_(False)
        self.model = load_lm(weights, self.config, lm_config, self.dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.clip_encoder = None
        vision_random = False
        if load_vision:
            from compressors.hico import ClipEncoder

            encoder, report = load_vision_encoder(weights, self.config, sha, self.device, self.dtype)
            self.clip_encoder = ClipEncoder(encoder, self.config.vision_encoder, report,
                                            tokens_per_frame=self.config.tokens_per_frame, device=str(self.device),
                                            dtype=self.dtype)
            vision_random = report.random_init
        del weights

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - name the directory and what is expected
            raise HicoMllmCheckpointError(f"hico_mllm checkpoint {checkpoint_dir}: cannot load the tokenizer "
                                          f"({type(exc).__name__}: {exc}); expected tokenizer.json / "
                                          f"tokenizer_config.json in the directory") from exc
        if self.config.chat_template == "tokenizer" and not getattr(self.tokenizer, "chat_template", None):
            raise HicoMllmCheckpointError(f"{CONFIG_FILE}: chat_template is 'tokenizer' but the tokenizer in "
                                          f"{checkpoint_dir} has none")
        self.image_token = self.config.image_token
        self.image_token_id = self._single_token_id(self.image_token)
        stops = [self._single_token_id(t) for t in (IM_END, ENDOFTEXT)]
        self.eos_token_ids = [t for t in stops if t is not None] or [self.tokenizer.eos_token_id]
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.info = BackendInfo("hico_mllm", checkpoint_dir, sha,
                                random_init=bool(self.config.random_init or vision_random))

    # -- text ---------------------------------------------------------------------------------------------------
    def _single_token_id(self, token: str) -> Optional[int]:
        """The id of `token` if the tokenizer has it as one token, else None."""
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and self.tokenizer.convert_ids_to_tokens(ids[0]) == token:
            return int(ids[0])
        return None

    def frames_count(self, request: Request) -> int:
        """T of the timestamp prompt: extra['num_frames'] if set, else len(frames), else n_clips * clip_len."""
        if request.extra.get("num_frames") is not None:
            return int(request.extra["num_frames"])
        if request.frames is not None:
            return int(len(request.frames))
        return int(np.asarray(request.hico_tokens).shape[0]) * self.config.clip_len

    @staticmethod
    def _has_video(request: Request) -> bool:
        return request.hico_tokens is not None or request.frames is not None

    def user_text(self, request: Request) -> str:
        if self.image_token in request.prompt:
            raise ValueError(f"request {request.video_id or '(no video_id)'}: the prompt must not contain "
                             f"{self.image_token!r} (the backend places the video itself)")
        if not self._has_video(request):
            return request.prompt
        return f"{self.image_token}\n" + video_question(request.prompt, request.duration_s, self.frames_count(request))

    def render(self, request: Request) -> str:
        """The full prompt text the LM sees (visual tokens stand where `<image>` is)."""
        system = request.system if request.system is not None else self.config.system_prompt
        user = self.user_text(request)
        if self.config.chat_template == "tokenizer":
            return self.tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}], tokenize=False,
                add_generation_prompt=True)
        return qwen2_chat_prompt(user, system)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- vision -------------------------------------------------------------------------------------------------
    def clip_tokens(self, request: Request) -> np.ndarray:
        """float16 [n_clips, tokens_per_clip, C]: request.hico_tokens, else computed from request.frames."""
        name = request.video_id or "(no video_id)"
        cfg = self.config
        if request.hico_tokens is not None:
            tokens = np.asarray(request.hico_tokens)
            want = (cfg.tokens_per_clip, cfg.projector_in)
            if tokens.ndim != 3 or tuple(tokens.shape[1:]) != want or tokens.shape[0] < 1:
                raise ValueError(f"request {name}: hico_tokens must have shape [n_clips >= 1, {want[0]}, {want[1]}], "
                                 f"got {list(tokens.shape)}")
            return tokens
        if self.clip_encoder is None:
            raise ValueError(f"request {name}: brings frames but no hico_tokens, and the backend was built with "
                             f"load_vision=False")
        frames = np.asarray(request.frames)
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise ValueError(f"request {name}: frames must be uint8 [T >= 1, H, W, 3], got {list(frames.shape)}")
        size = int(request.extra.get("resolution", cfg.frame_size))
        return self.clip_encoder.encode(frames, size).tokens

    def prepare(self, request: Request) -> Prepared:
        text = self.render(request)
        if not self._has_video(request):
            if self.image_token_id is not None and self.image_token_id in self.tokenize(text):
                raise ValueError(f"request {request.video_id or '(no video_id)'}: text-only prompt contains "
                                 f"{self.image_token!r}")
            return Prepared(self.tokenize(text), [], None, 0)
        if self.image_token_id is not None:
            ids = self.tokenize(text)
            where = [i for i, t in enumerate(ids) if t == self.image_token_id]
            if len(where) != 1:
                raise ValueError(f"request {request.video_id or '(no video_id)'}: expected exactly one "
                                 f"{self.image_token!r} in the prompt, found {len(where)}")
            before, after = ids[:where[0]], ids[where[0] + 1:]
        else:  # LLaVA tokenizer_image_token: the pieces around <image> are tokenised separately
            pieces = text.split(self.image_token)
            if len(pieces) != 2:
                raise ValueError(f"request {request.video_id or '(no video_id)'}: expected exactly one "
                                 f"{self.image_token!r} in the prompt, found {len(pieces) - 1}")
            before, after = self.tokenize(pieces[0]), self.tokenize(pieces[1])
        tokens = self.clip_tokens(request)
        visual = torch.from_numpy(np.ascontiguousarray(tokens)).reshape(-1, tokens.shape[-1])
        return Prepared(before, after, visual.to(device=self.device, dtype=self.dtype), int(tokens.shape[0]))

    @torch.inference_mode()
    def inputs_embeds(self, request: Request) -> torch.Tensor:
        """[L, H] LM input embeddings of one request: text embeddings with the projected visual tokens spliced in
        place of `<image>` (L = prompt tokens - 1 + n_clips * tokens_per_clip for video requests)."""
        return self._embed(self.prepare(request))

    def _embed(self, p: Prepared) -> torch.Tensor:
        embed = self.model.get_input_embeddings()
        parts = []
        if p.ids_before:
            parts.append(embed(torch.tensor(p.ids_before, device=self.device)))
        if p.visual is not None:
            parts.append(self.projector(p.visual).to(parts[0].dtype if parts else self.dtype))
        if p.ids_after:
            parts.append(embed(torch.tensor(p.ids_after, device=self.device)))
        if not parts:
            raise ValueError("empty prompt")
        return torch.cat(parts, dim=0)

    # -- generation ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(self, requests: Sequence[Request]) -> list[list[int]]:
        """The generated token ids of each request (eos / padding removed), in request order."""
        out: list[list[int]] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._generate_batch(requests[start:start + self.batch_size]))
        return out

    def generate(self, requests: Sequence[Request]) -> list[str]:
        ids = self.generate_ids(requests)
        return [self.tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in ids]

    def _generation_config(self):
        from transformers import GenerationConfig

        p = self.params
        kwargs = dict(max_new_tokens=p.max_new_tokens, do_sample=p.do_sample, eos_token_id=self.eos_token_ids,
                      pad_token_id=self.pad_token_id, use_cache=True)
        if p.do_sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p)
        return GenerationConfig(**kwargs)

    def _generate_batch(self, batch: Sequence[Request]) -> list[list[int]]:
        embeds = [self._embed(self.prepare(r)) for r in batch]
        longest = max(e.shape[0] for e in embeds)
        hidden = embeds[0].shape[1]
        pad_vec = self.model.get_input_embeddings()(torch.tensor([self.pad_token_id], device=self.device))[0]
        inputs = pad_vec.expand(len(batch), longest, hidden).clone()
        mask = torch.zeros(len(batch), longest, dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):  # left padding: the prompt ends where generation starts
            inputs[i, longest - e.shape[0]:] = e
            mask[i, longest - e.shape[0]:] = 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.params.seed)
            out = self.model.generate(inputs_embeds=inputs, attention_mask=mask,
                                      generation_config=self._generation_config())
        if out.shape[1] > self.params.max_new_tokens:  # some versions prepend the (dummy) prompt ids
            out = out[:, -self.params.max_new_tokens:]
        results = []
        stops = set(self.eos_token_ids) | {self.pad_token_id}
        for row in out.tolist():
            seq = []
            for t in row:
                if t in stops:
                    break
                seq.append(t)
            results.append(seq)
        return results
