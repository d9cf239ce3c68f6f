/* spawnref: the C floor for spawn_bench.py -- posix_spawnp + wait, CONCURRENCY
 * children in flight, nothing else.  What no event loop can beat on this
 * machine: the children's own CPU (exec, the dynamic loader, exit) is the same
 * for every loop, and this spends almost nothing beside it.
 *
 *     spawnref N CONCURRENCY WARMUP PROGRAM [ARGS...]
 *
 * Prints one JSON line: rate, elapsed, CPU per op of itself and of its children.
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(int who) {
    struct rusage r;
    getrusage(who, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static int run(int n, int concurrency, char **argv) {
    int started = 0, done = 0, inflight = 0, errors = 0;
    while (done < n) {
        while (inflight < concurrency && started < n) {
            pid_t pid;
            int err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
            if (err) {
                fprintf(stderr, "posix_spawnp: %s\n", strerror(err));
                exit(1);
            }
            inflight++;
            started++;
        }
        int status;
        if (wait(&status) < 0) {
            if (errno == EINTR) continue;
            perror("wait");
            exit(1);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) errors++;
        inflight--;
        done++;
    }
    return errors;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: spawnref N CONCURRENCY WARMUP PROGRAM [ARGS...]\n");
        return 2;
    }
    int n = atoi(argv[1]), concurrency = atoi(argv[2]), warmup = atoi(argv[3]);
    run(warmup, concurrency, argv + 4);
    double c0 = cpu(RUSAGE_SELF), k0 = cpu(RUSAGE_CHILDREN), t0 = now();
    int errors = run(n, concurrency, argv + 4);
    double t1 = now(), c1 = cpu(RUSAGE_SELF), k1 = cpu(RUSAGE_CHILDREN);
    printf("{\"elapsed\": %.6f, \"rate\": %.1f, \"cpu_per_op_us\": %.1f, "
           "\"children_cpu_per_op_us\": %.1f, \"errors\": %d}\n",
           t1 - t0, n / (t1 - t0), (c1 - c0) / n * 1e6, (k1 - k0) / n * 1e6, errors);
    return 0;
}
