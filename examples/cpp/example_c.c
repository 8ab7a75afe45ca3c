/* The same steps from C, through memd.h: open, allocate, write, read back,
 * statistics, free. Every call returns a memd_status; the message of a
 * failure is memd_last_error_message(). */
#include <stdio.h>
#include <string.h>

#include <memd/memd.h>

static int check(memd_status status, const char* what) {
  if (status == MEMD_OK) return 0;
  fprintf(stderr, "%s: %s (%s)\n", what, memd_last_error_message(), memd_status_name(status));
  return 1;
}

int main(void) {
  const uint64_t sizes[] = {64u << 20}; /* host:0, 64 MiB */
  /* Designated: fields added in later ABI versions (lease_socket, ...) stay 0. */
  memd_engine_options options = {.host_device_sizes = sizes, .host_device_count = 1, .enable_cuda = 0, .owner = "example-c"};
  memd_engine* engine = NULL;
  if (check(memd_engine_open(&options, &engine), "open")) return 1;

  memd_allocate_request request = {1u << 20, MEMD_MEMORY_VRAM, "host:0", 0};
  memd_allocation_id id;
  if (check(memd_allocate(engine, &request, &id), "allocate")) return 1;
  char text[MEMD_ALLOCATION_ID_TEXT];
  memd_allocation_id_format(id, text, sizeof text);

  const char message[] = "hello from C";
  char back[sizeof message] = {0};
  if (check(memd_write(engine, id, 0, message, sizeof message), "write")) return 1;
  if (check(memd_read(engine, id, 0, back, sizeof back), "read")) return 1;
  printf("allocation %s read back: %s\n", text, back);

  memd_stats stats;
  if (check(memd_get_stats(engine, "host:0", &stats), "stats")) return 1;
  printf("host:0: %llu allocation(s), %llu bytes allocated\n", (unsigned long long)stats.allocations,
         (unsigned long long)stats.allocated_bytes);

  if (check(memd_free(engine, id), "free")) return 1;
  memd_status again = memd_free(engine, id);
  printf("second free: %s\n", memd_status_name(again));
  memd_engine_close(engine);
  return strcmp(back, message) == 0 && again == MEMD_NOT_FOUND ? 0 : 1;
}
