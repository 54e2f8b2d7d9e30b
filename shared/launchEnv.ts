/** What `run`'s launcher tells the processes it forks, beside torchrun's MASTER_ADDR, RANK, ... */

/** '1' in a worker forked by the launcher: a terminal's Ctrl-C is the launcher's to handle. */
export const LAUNCHED_ENV = 'DISTSAMPLER_LAUNCHED';
