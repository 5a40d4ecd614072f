import { Emitter } from './emitter.js';
import type { LostEvent, Position, ProtocolError, Publication, PresenceMember, SubscriptionEvents } from './types.js';

export type SubscriptionState = 'pending' | 'subscribing' | 'subscribed' | 'failed' | 'unsubscribed';

export interface SubscribeOptions {
  /** Called once per publication, in offset order. */
  onPublication?: (p: Publication) => void;
  /** Called when publications were lost (see `LostEvent`). */
  onLost?: (e: LostEvent) => void;
  /** Resubscribe with `since` after every reconnect (default true). */
  recover?: boolean;
  /** Start from this position (e.g. one saved by the application): the first subscribe recovers from it. */
  since?: Position;
}

/**
 * One channel. Keeps the epoch and offset of the last publication delivered,
 * drops duplicates and reports every loss as a `lost` event.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  state: SubscriptionState = 'pending';
  readonly recover: boolean;
  private pos: Position | undefined;

  constructor(readonly channel: string, opts: SubscribeOptions, private readonly detach: (s: Subscription) => void) {
    super();
    this.recover = opts.recover !== false;
    this.pos = opts.since ? { ...opts.since } : undefined;
    if (opts.onPublication) this.on('publication', opts.onPublication);
    if (opts.onLost) this.on('lost', opts.onLost);
  }

  /** Position of the last publication delivered (or the subscribe point). */
  get position(): Position | undefined {
    return this.pos ? { ...this.pos } : undefined;
  }

  /** What to send as `since` on (re)subscribe. */
  since(): Position | undefined {
    return this.recover ? this.position : undefined;
  }

  unsubscribe(): void {
    if (this.state === 'unsubscribed') return;
    this.state = 'unsubscribed';
    this.detach(this);
    this.emit('unsubscribed', {});
  }

  /** @internal A subscribe reply. */
  _subscribed(ok: { epoch: string; offset: number; recovered?: boolean }): void {
    if (this.state === 'unsubscribed') return;
    const prev = this.pos;
    const now = { epoch: ok.epoch, offset: ok.offset };
    this.state = 'subscribed';
    if (prev && !(ok.recovered === true && ok.epoch === prev.epoch)) {
      // Nothing follows to fill the space between prev and now: say so.
      this.pos = now;
      if (ok.epoch !== prev.epoch || ok.offset !== prev.offset) {
        this.emit('lost', { reason: ok.epoch !== prev.epoch ? 'new_epoch' : 'not_recovered', prev, now });
      }
    } else if (!prev) {
      this.pos = now;
    }
    // recovered: the missed publications follow, prev..ok.offset, and advance pos themselves.
    this.emit('subscribed', { ...now, recovered: ok.recovered });
  }

  /** @internal A push for this channel. */
  _push(p: Publication): void {
    if (this.state !== 'subscribed') return;
    const prev = this.pos;
    if (!prev || p.epoch !== prev.epoch) {
      const now = { epoch: p.epoch, offset: p.offset - 1 };
      this.pos = now;
      if (prev) this.emit('lost', { reason: 'new_epoch', prev, now });
    } else if (p.offset <= prev.offset) {
      return; // already delivered
    } else if (p.offset > prev.offset + 1) {
      this.emit('lost', { reason: 'gap', prev, now: { epoch: p.epoch, offset: p.offset - 1 } });
    }
    this.pos = { epoch: p.epoch, offset: p.offset };
    this.emit('publication', p);
  }

  /** @internal */
  _presence(kind: 'join' | 'leave', m: PresenceMember): void {
    this.emit(kind, m);
  }

  /** @internal A refusal the client will not retry. */
  _fail(e: ProtocolError): void {
    this.state = 'failed';
    this.emit('error', e);
  }
}
