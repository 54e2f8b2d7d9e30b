/**
 * The coordinator's side of one worker connection: ws's WebSocket, except for frames over the
 * size limit. ws cuts those with 1009 and no reason; the protocol promises a 4xxx code and words,
 * so the close ws asks for is rewritten here (ws calls close() itself, before any 'error' handler).
 */
import { WebSocket } from 'ws';
import { CloseCode, MAX_FRAME_BYTES } from '../shared/protocol.ts';

/** ws's close code for a message over maxPayload. */
const WS_MESSAGE_TOO_BIG = 1009;

export class PeerSocket extends WebSocket {
  override close(code?: number, data?: string | Buffer): void {
    if (code === WS_MESSAGE_TOO_BIG && data === undefined) {
      super.close(CloseCode.FrameTooLarge, `frame over the ${MAX_FRAME_BYTES}-byte limit`);
      return;
    }
    super.close(code, data);
  }
}
