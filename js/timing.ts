/** Every delay the explorer uses, in one place (milliseconds). */

/** Work for the kernel (trait sync while scrubbing, memories, speculative slices) waits for a pause this long. */
export const SETTLE_MS = 200;
/**
 * A change whose numbers are on their way keeps the frame on screen this long, so that a quick
 * answer is drawn with the change in one frame (no faded frame in between, no extra layout).
 */
export const HOLD_FRAME_MS = 150;
/** One layer per step when playing. */
export const PLAY_MS = 700;
/**
 * The kernel's liveness is checked this often (a ping, unless it just answered or the user is busy);
 * a ping unanswered for HEARTBEAT_TIMEOUT_MS means it is gone.
 */
export const HEARTBEAT_MS = 3000;
export const HEARTBEAT_TIMEOUT_MS = 8000;
/** The class list closes this long after the picker loses focus, so a click on an option still lands. */
export const PICKER_BLUR_MS = 150;
