/**
 * The one error type crossdev throws. `code` is stable (`ERR_EMPTY_DESTINATIONS`, …) so callers can
 * branch on it; `message` says what was wrong and what is allowed (TensorFlow's words where it had
 * them, so tests ported from TensorFlow keep matching).
 */
export class CrossDeviceError extends Error {
  /** Stable machine-readable code. */
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'CrossDeviceError';
    this.code = code;
  }
}
