/** Shapes of the wire protocol v1 and of the client's events. */

export type State = 'disconnected' | 'connecting' | 'connected' | 'closed';
export type TransportName = 'websocket' | 'sse';

export interface Position {
  epoch: string;
  offset: number;
}

export interface Publication {
  channel: string;
  epoch: string;
  offset: number;
  data: unknown;
}

export interface ProtocolError {
  code: number;
  message: string;
  temporary: boolean;
}

export interface CloseInfo {
  /** WebSocket close code, or the code an SSE stream's `event: close` carried; 1006 for a stream that ended without one. */
  code: number;
  reason: string;
}

export interface DisconnectedEvent extends CloseInfo {
  /** Time until the next attempt, in ms. */
  delayMs: number;
}

export interface ConnectedEvent {
  transport: TransportName;
}

export interface ConnectingEvent {
  transport: TransportName;
  attempt: number;
}

export interface ClientEvents {
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  closed: CloseInfo;
  error: Error;
}

export interface SubscribedEvent extends Position {
  /** Set when the subscription asked for `since`: true when every missed publication follows. */
  recovered?: boolean;
}

/**
 * Publications the client could not deliver: the server's `recovered: false`,
 * a new epoch (history lost), or a gap in offsets. Never silent.
 */
export interface LostEvent {
  reason: 'not_recovered' | 'new_epoch' | 'gap';
  /** Last position delivered before the loss (absent if none). */
  prev?: Position;
  /** Position the subscription continues from. */
  now: Position;
}

export interface PresenceMember {
  user: string;
  conn: string;
}

export interface SubscriptionEvents {
  subscribed: SubscribedEvent;
  publication: Publication;
  lost: LostEvent;
  join: PresenceMember;
  leave: PresenceMember;
  error: ProtocolError;
  unsubscribed: Record<string, never>;
}

export interface HistoryResult {
  publications: { offset: number; data: unknown }[];
  epoch: string;
  offset: number;
  /** Present when the window asked for holds more: pass it as `since` for the rest. */
  next?: Position;
}
