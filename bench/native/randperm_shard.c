/*
 * The physical reference for the torch engine: one rank's DistributedSampler shard, the same
 * algorithm as torch.randperm's forward branch on CPU, in plain C.
 *
 *   cc -O3 -o randperm_shard randperm_shard.c
 *   ./randperm_shard LENGTH WORLD RANK SEED32
 *
 * mt19937 seeded (init_genrand) with the low 32 bits of seed + epoch; forward Fisher-Yates
 * z = next() % (n - i) for i in [0, n - 1), swapping r[i] and r[i + z]; padded to a multiple
 * of WORLD by repeating the head; the rank's stride r[rank], r[rank + WORLD], ...
 *
 * One derivation per process (the first shard of a fresh process, as the bench compares it).
 * Prints one JSON line: wall and CPU ms of the derivation (allocation included), peak RSS, and
 * the shard's fold (bench/shardCommon.ts: FNV-1a over 32-bit words, sum mod 2^32) so the
 * caller can check this computed the same shard as ours.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#define MT_N 624
#define MT_M 397

typedef struct {
  uint32_t state[MT_N];
  int index;
} mt19937;

static void mt_seed(mt19937 *g, uint32_t seed) {
  g->state[0] = seed;
  for (int i = 1; i < MT_N; i++) {
    uint32_t prev = g->state[i - 1];
    g->state[i] = 1812433253u * (prev ^ (prev >> 30)) + (uint32_t)i;
  }
  g->index = MT_N;
}

static void mt_twist(mt19937 *g) {
  uint32_t *mt = g->state;
  for (int i = 0; i < MT_N; i++) {
    uint32_t y = (mt[i] & 0x80000000u) | (mt[(i + 1) % MT_N] & 0x7fffffffu);
    mt[i] = mt[(i + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
  }
  g->index = 0;
}

static inline uint32_t mt_next(mt19937 *g) {
  if (g->index >= MT_N) mt_twist(g);
  uint32_t y = g->state[g->index++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

static double ms_of(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s LENGTH WORLD RANK SEED32\n", argv[0]);
    return 2;
  }
  const uint32_t n = (uint32_t)strtoul(argv[1], NULL, 10);
  const uint32_t world = (uint32_t)strtoul(argv[2], NULL, 10);
  const uint32_t rank = (uint32_t)strtoul(argv[3], NULL, 10);
  const uint32_t seed32 = (uint32_t)strtoul(argv[4], NULL, 10);
  /* torch's forward branch holds below 0xffffffff / 20; above it torch draws 64 bits. */
  if (n == 0 || n >= 0xffffffffu / 20 || world == 0 || rank >= world) {
    fprintf(stderr, "randperm_shard: need 0 < LENGTH < 214748364 and RANK < WORLD\n");
    return 2;
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const long baseline_kb = usage.ru_maxrss;

  const double wall0 = ms_of(CLOCK_MONOTONIC);
  const double cpu0 = ms_of(CLOCK_PROCESS_CPUTIME_ID);
  static mt19937 gen;
  mt_seed(&gen, seed32);
  uint32_t *r = malloc((size_t)n * sizeof *r);
  const uint32_t count = (n + world - 1) / world;
  uint32_t *shard = malloc((size_t)count * sizeof *shard);
  if (!r || !shard) {
    fprintf(stderr, "randperm_shard: out of memory\n");
    return 1;
  }
  for (uint32_t i = 0; i < n; i++) r[i] = i;
  for (uint32_t i = 0; i + 1 < n; i++) {
    const uint32_t z = mt_next(&gen) % (n - i);
    const uint32_t saved = r[i];
    r[i] = r[i + z];
    r[i + z] = saved;
  }
  /* Padding repeats the head: position p of the padded list is r[p % n]. */
  for (uint32_t k = 0; k < count; k++) shard[k] = r[((uint64_t)rank + (uint64_t)k * world) % n];
  const double wall_ms = ms_of(CLOCK_MONOTONIC) - wall0;
  const double cpu_ms = ms_of(CLOCK_PROCESS_CPUTIME_ID) - cpu0;

  getrusage(RUSAGE_SELF, &usage);
  uint32_t hash = 0x811c9dc5u, sum = 0;
  for (uint32_t k = 0; k < count; k++) {
    hash = (hash ^ shard[k]) * 0x01000193u;
    sum += shard[k];
  }
  printf("{\"ok\":true,\"count\":%u,\"wallMs\":%.3f,\"cpuMs\":%.3f,\"baselineRssKb\":%ld,\"peakRssKb\":%ld,"
         "\"fold\":\"%08x%08x\",\"head\":[%u,%u,%u]}\n",
         count, wall_ms, cpu_ms, baseline_kb, usage.ru_maxrss, hash, sum, shard[0], count > 1 ? shard[1] : 0,
         count > 2 ? shard[2] : 0);
  free(shard);
  free(r);
  return 0;
}
