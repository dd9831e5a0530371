#!/usr/bin/env python3
"""Re-quantizes the default SmolLM2 GGUF with llama.cpp's own quantizer, the K-quant files
of issue 18's oracle: the Q4_1 file dequantized exactly (gguf-py) into a float32 GGUF with
the same metadata, then `llama_model_quantize` (llama-cpp-python 0.3.36) to FTYPE.

Run:  python requantize-model.py MODEL.gguf OUT.gguf FTYPE   (FTYPE: Q4_K_M, Q5_K_M, Q6_K, Q5_0, ...)
Needs gguf==0.19.0 and llama-cpp-python==0.3.36 (ops/bench's venv has both).
"""
import os, sys, tempfile
import numpy as np
import gguf
from gguf.quants import dequantize
import llama_cpp

FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_S": 14, "Q4_K_M": 15,
          "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18}

def float32_copy(source, path):
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(path, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_key_value(field.name, 0, gguf.GGUFValueType.UINT32)  # ALL_F32
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()

def main():
    source, out, ftype = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "model.f32.gguf")
        float32_copy(source, f32)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[ftype]
        params.nthread = 2
        status = llama_cpp.llama_model_quantize(f32.encode(), (out + ".part").encode(), params)
        if status != 0:
            sys.exit(f"llama_model_quantize failed: {status}")
        os.replace(out + ".part", out)
    counts = {}
    for t in gguf.GGUFReader(out).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    print(out, ftype, counts, file=sys.stderr)

main()
