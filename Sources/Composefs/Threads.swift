#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Number of online CPUs (at least 1).
public func onlineProcessorCount() -> Int {
    max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}

/// Shared state of a `parallelFor` run: a mutex-protected work index.
private final class ParallelJob: @unchecked Sendable {
    let count: Int
    let body: (Int, Int) -> Void
    private var next = 0
    private var workers = 0
    private var mutex = pthread_mutex_t()

    init(count: Int, body: @escaping (Int, Int) -> Void) {
        self.count = count
        self.body = body
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    func take() -> Int? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard next < count else { return nil }
        next += 1
        return next - 1
    }

    private func join() -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        workers += 1
        return workers - 1
    }

    func work() {
        let worker = join()
        while let i = take() { body(worker, i) }
    }
}

/// Runs `body(i)` for i in 0..<count on `threads` pthreads (the caller's
/// thread is one of them). Plain pthreads keep Foundation/Dispatch out of
/// static binaries. `body` must only touch per-index state.
public func parallelFor(_ count: Int, threads: Int, _ body: @escaping (Int) -> Void) {
    parallelFor(count, threads: threads) { _, i in body(i) }
}

/// Like `parallelFor(_:threads:_:)`, `body(worker, i)` also told which of
/// the `min(threads, count)` workers (0, 1, ...) runs it, so that each can
/// reuse its own buffers.
public func parallelFor(_ count: Int, threads: Int, _ body: @escaping (Int, Int) -> Void) {
    let job = ParallelJob(count: count, body: body)
    let extra = max(0, min(threads, count) - 1)
    var tids: [pthread_t] = []
    for _ in 0..<extra {
        var tid = pthread_t()
        let arg = Unmanaged.passRetained(job).toOpaque()
        let r = pthread_create(&tid, nil, { arg in
            let job = Unmanaged<ParallelJob>.fromOpaque(arg!).takeRetainedValue()
            job.work()
            return nil
        }, arg)
        if r == 0 { tids.append(tid) } else { Unmanaged<ParallelJob>.fromOpaque(arg).release() }
    }
    job.work()
    for t in tids { pthread_join(t, nil) }
}

/// A fixed-size result buffer that worker threads fill at distinct indices.
final class ResultSlots<T>: @unchecked Sendable {
    private let p: UnsafeMutablePointer<T?>
    let count: Int
    init(_ count: Int) {
        self.count = count
        p = .allocate(capacity: max(count, 1))
        p.initialize(repeating: nil, count: max(count, 1))
    }
    deinit {
        p.deinitialize(count: max(count, 1))
        p.deallocate()
    }
    subscript(i: Int) -> T? {
        get { p[i] }
        set { p[i] = newValue }
    }
}
