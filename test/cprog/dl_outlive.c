/*
 * dl_outlive — a container's main process that outlives its GPU work: it runs
 * PROG ARGS as a child, waits for it, prints "CHILD_EXITED status=N", then
 * stays alive until killed (as a notebook kernel or a job's shell does after its
 * GPU step). Not linked to the driver.
 *
 *   dl_outlive PROG ARGS...
 */
#include "testutil.h"

#include <sys/wait.h>
#include <time.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        fail("usage: dl_outlive PROG ARGS...");
    pid_t child = fork();
    if (child < 0)
        fail("fork: %s", strerror(errno));
    if (child == 0) {
        execv(argv[1], argv + 1);
        fail("exec %s: %s", argv[1], strerror(errno));
    }
    int status;
    if (waitpid(child, &status, 0) != child)
        fail("waitpid: %s", strerror(errno));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    say("CHILD_EXITED status=%d at_ns=%lld",
        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
        (long long)now.tv_sec * 1000000000ll + now.tv_nsec);
    for (;;)
        pause();
}
