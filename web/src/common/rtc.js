// Shared by the WHIP publisher (dashboard) and the WHEP player.

// CLOSE_WAIT_MS bounds how long a stopped session waits for its DELETE
// before closing its connection.
const CLOSE_WAIT_MS = 2000;

// closeAfter closes pc once ended (the session's DELETE, a promise that
// never rejects) has settled, or
// after waitMs: a connection closed first makes the server end the
// session by itself, and the DELETE that follows would find nothing (404).
export function closeAfter(pc, ended, waitMs = CLOSE_WAIT_MS) {
  const close = () => {
    try {
      pc.close();
    } catch {
      // Already closed.
    }
  };
  const t = setTimeout(close, waitMs);
  ended.finally(() => {
    clearTimeout(t);
    close();
  });
}
