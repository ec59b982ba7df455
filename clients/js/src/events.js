// @ts-check
/**
 * Listeners by event type, shared by the connection client and a tab of a shared one.
 * @module tickmesh/events
 */

/** @template {Record<string, any>} M event type -> its detail */
export class Emitter {
  constructor() {
    /** @type {Map<keyof M, Set<(detail: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @template {keyof M} K
   * @param {K} type
   * @param {(detail: M[K]) => void} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * @template {keyof M} K
   * @param {K} type
   * @param {(detail: M[K]) => void} fn
   */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {keyof M} type */
  listens(type) {
    return (this._listeners.get(type)?.size ?? 0) > 0;
  }

  /** @param {keyof M} type @param {any} detail */
  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of set) {
      try {
        fn(detail);
      } catch (err) {
        // A failing listener must not break the stream; surface it outside this loop.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
