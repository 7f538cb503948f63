/* zcrm_signal.h - SIGINT/SIGTERM as a flag, for the command line tool: an interrupt
 * stops a bulk run between calls (after the calls in flight), never in the middle. */
#ifndef ZCRM_SIGNAL_H
#define ZCRM_SIGNAL_H

/* Installs the handlers (once per process; a second signal of the same kind takes the
 * default action, so a second Ctrl-C still kills). Returns 0, or -1 with errno set. */
int zcrm_trap_interrupts(void);

/* The number of the first signal caught since zcrm_trap_interrupts, else 0. */
int zcrm_interrupted(void);

#endif
