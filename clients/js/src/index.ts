export { Client, ShardcastError, DisconnectedError, type ClientOptions } from './client.js';
export { Subscription, type SubscribeOptions, type SubscriptionState } from './subscription.js';
export { backoffDelay, type BackoffOptions } from './backoff.js';
export type { WebSocketCtor, WebSocketLike } from './transport.js';
export type {
  State,
  TransportName,
  Position,
  Publication,
  ProtocolError,
  CloseInfo,
  DisconnectedEvent,
  ConnectedEvent,
  ConnectingEvent,
  ClientEvents,
  SubscribedEvent,
  LostEvent,
  PresenceMember,
  SubscriptionEvents,
  HistoryResult,
} from './types.js';
