// Activations travel as float32 binary buffers; JSON only carries [offset, length] into them.

export type Span = [number, number];

/** Copy any buffer-like thing the comm hands us into an aligned Float32Array. */
export function toFloat32(buf: unknown): Float32Array {
  if (buf == null) return new Float32Array(0);
  let bytes: Uint8Array;
  if (buf instanceof Float32Array) return buf;
  if (buf instanceof ArrayBuffer) bytes = new Uint8Array(buf);
  else if (ArrayBuffer.isView(buf)) bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  else throw new Error("expected a binary buffer of float32 activations");
  if (bytes.byteLength % 4 !== 0) throw new Error(`buffer length ${bytes.byteLength} is not a multiple of 4`);
  return new Float32Array(bytes.slice().buffer);
}

export function slice(values: Float32Array, span: Span | null | undefined): Float32Array {
  if (!span) return new Float32Array(0);
  const [off, n] = span;
  return values.subarray(off, off + n);
}
