#if canImport(Glibc)
import Glibc
#endif

/// A flag one thread raises to stop another that sleeps between rounds of
/// work: the sleeper wakes at once instead of at the end of its interval
/// (a sleep of 200 ms at the end of every libostree call added up to
/// seconds). Its lock also guards whatever state the two share.
final class StopSignal: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var stopped = false

    init() {
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
    }

    deinit {
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(lock)
        wake.deallocate()
        lock.deallocate()
    }

    func stop() {
        pthread_mutex_lock(lock)
        stopped = true
        pthread_cond_signal(wake)
        pthread_mutex_unlock(lock)
    }

    /// Sleeps `milliseconds`, or until `stop`; false once stopped.
    func sleep(milliseconds: Int) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_nsec += milliseconds * 1_000_000
        deadline.tv_sec += deadline.tv_nsec / 1_000_000_000
        deadline.tv_nsec %= 1_000_000_000
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if !stopped { _ = pthread_cond_timedwait(wake, lock, &deadline) }
        return !stopped
    }

    /// Runs `body` under the lock, told whether `stop` was called.
    func withLock<T>(_ body: (_ stopped: Bool) throws -> T) rethrows -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body(stopped)
    }
}
