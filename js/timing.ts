/** Every delay the explorer uses, in one place (milliseconds). */

/** Work for the kernel (trait sync while scrubbing, memories, speculative slices) waits for a pause this long. */
export const SETTLE_MS = 200;
/** One layer per step when playing. */
export const PLAY_MS = 700;
