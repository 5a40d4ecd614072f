/** A minimal typed event emitter; listeners run after the state they report is set. */
export type Listener<T> = (ev: T) => void;

export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};

  on<K extends keyof Events>(name: K, fn: Listener<Events[K]>): () => void {
    (this.listeners[name] ||= []).push(fn);
    return () => this.off(name, fn);
  }

  off<K extends keyof Events>(name: K, fn: Listener<Events[K]>): void {
    const l = this.listeners[name];
    if (l) this.listeners[name] = l.filter((f) => f !== fn);
  }

  protected emit<K extends keyof Events>(name: K, ev: Events[K]): void {
    for (const fn of this.listeners[name] || []) {
      try {
        fn(ev);
      } catch (e) {
        // A throwing listener must not break the client's own bookkeeping.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
