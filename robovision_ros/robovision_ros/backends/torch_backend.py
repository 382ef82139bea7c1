# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch backend: the reference implementation, fp32 on CPU/CUDA, bf16 on CPU/CUDA, fp16 on CUDA."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from robovision_ros.backends.base import BackendCapabilities, BackendEntry, BackendRequest, BackendUnavailableError, \
    EncoderBackend
from robovision_ros.model_dir import ModelInfo, family_of, load_tokenizer, load_torch_model, logit_bias, logit_scale, \
    text_encoder_module, text_length, vision_encoder_module
from robovision_ros.parameters import FIXED, ParameterRule, ParameterSpec


CAPABILITIES = BackendCapabilities(
    name='torch', module='torch', precisions=(('cpu', ('fp32', 'bf16')), ('cuda', ('fp32', 'bf16', 'fp16'))),
    device_tensors=True, cuda_graphs=True, auto_rank=(('cpu', 20), ('cuda', 10)))

PARAMETERS = (
    ParameterSpec('cuda_graphs', 'bool', False,
                  'backend torch on device cuda: replay the image encoder as captured CUDA graphs (one capture per '
                  'input shape, at the first frame of that shape).', FIXED, owner='torch'),
)


def _cuda_graphs_rule(values: dict) -> Optional[str]:
    if values['cuda_graphs'] and (values['backend'] != 'torch' or values['device'] != 'cuda'):
        return f"cuda_graphs needs backend torch on device cuda; got backend {values['backend']} on {values['device']}"
    return None


class TorchBackend(EncoderBackend):
    name = 'torch'
    capabilities = CAPABILITIES

    def __init__(self, info: ModelInfo, device: str, precision: str, cuda_graphs: bool = False) -> None:
        CAPABILITIES.require(device, precision)
        import torch

        super().__init__(device, precision)
        if device == 'cuda' and not torch.cuda.is_available():
            raise BackendUnavailableError('device cuda requested but torch finds no CUDA GPU')
        dtypes = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
        self.info = info
        self.output_names = family_of(info).image_outputs
        self.dtype = dtypes[precision]
        self.model = load_torch_model(info).to(device=device, dtype=self.dtype)
        self.vision = vision_encoder_module(self.model, info)
        self.vision_interpolating = vision_encoder_module(self.model, info, interpolate_pos_encoding=True)
        self.text = text_encoder_module(self.model, info) if info.has_text else None
        if info.has_text:
            self.logit_scale = logit_scale(self.model, info)
            self.logit_bias = logit_bias(self.model, info)
            self.text_length = text_length(load_tokenizer(info), self.model, info)
        self.cuda_graphs = cuda_graphs and device == 'cuda'
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}

    def run_image(self, pixel_values: Any) -> dict[str, np.ndarray]:
        """Run a numpy array or a torch tensor already on the device (the GPU preprocessing path)."""
        import torch

        with torch.inference_mode():
            pixels = torch.as_tensor(pixel_values).to(self.device, self.dtype)
            native = tuple(pixels.shape[-2:]) == (self.info.image_size, self.info.image_size)
            if self.cuda_graphs and native:
                outputs = self._run_graph(pixels)
            else:
                outputs = (self.vision if native else self.vision_interpolating)(pixels)
            return {name: tensor.float().cpu().numpy() for name, tensor in zip(self.output_names, outputs)}

    def _run_graph(self, pixels: Any) -> tuple[Any, ...]:
        """Replay a captured CUDA graph for this input shape (captured on first use)."""
        import torch

        key = tuple(pixels.shape)
        if key not in self._graphs:
            static_in = pixels.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self.vision(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the vocabulary worker may run the text tower on another thread during a capture.
            with torch.cuda.graph(graph, capture_error_mode='thread_local'):
                static_out = self.vision(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(pixels)
        graph.replay()
        return tuple(tensor.clone() for tensor in static_out)

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        if self.text is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder')
        with torch.inference_mode():
            ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device)
            mask = torch.as_tensor(attention_mask, dtype=torch.long, device=self.device)
            return self.text(ids, mask).float().cpu().numpy()

    def close(self) -> None:
        import torch

        self._graphs.clear()
        self.model = self.vision = self.vision_interpolating = self.text = None
        if self.device == 'cuda':
            torch.cuda.empty_cache()


def _load(request: BackendRequest) -> TorchBackend:
    return TorchBackend(request.info, request.device, request.precision,
                        cuda_graphs=bool(request.options.get('cuda_graphs', False)))


BACKEND = BackendEntry(CAPABILITIES, _load, PARAMETERS,
                       (ParameterRule(frozenset({'cuda_graphs', 'backend', 'device'}), _cuda_graphs_rule),))
