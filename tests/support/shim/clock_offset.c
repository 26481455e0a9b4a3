/* LD_PRELOAD shim: CLOCK_REALTIME (the wall clock: SystemTime::now) shifted by the number of
 * seconds written in the file named by TESSERA_CLOCK_OFFSET_FILE, read on every call so a
 * test can step the clock while the process runs. Monotonic clocks are left alone. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);

int clock_gettime(clockid_t id, struct timespec *ts) {
  if (!real_clock_gettime) {
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  }
  int r = real_clock_gettime(id, ts);
  if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
    const char *path = getenv("TESSERA_CLOCK_OFFSET_FILE");
    long long offset = 0;
    if (path) {
      FILE *f = fopen(path, "r");
      if (f) {
        if (fscanf(f, "%lld", &offset) != 1) offset = 0;
        fclose(f);
      }
    }
    ts->tv_sec += offset;
  }
  return r;
}
