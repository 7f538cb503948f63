/* zcrm_signal.c - see zcrm_signal.h. The one piece of process-wide state in the core:
 * a signal disposition is per process, so its flag is too. */
#include <signal.h>
#include <string.h>
#include "zcrm_signal.h"

static volatile sig_atomic_t caught;

static void on_signal(int sig)
{
    if (!caught) caught = sig;
}

int zcrm_trap_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* the second Ctrl-C is the default: terminate */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0) return -1;
    return sigaction(SIGTERM, &sa, NULL);
}

int zcrm_interrupted(void)
{
    return (int)caught;
}
