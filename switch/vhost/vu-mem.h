/* Guest memory as a vhost-user frontend describes it (SET_MEM_TABLE): up to
 * VU_MEM_MAX_REGIONS regions, each an fd mapped here, with its guest
 * physical address and the frontend's own virtual address. The table is
 * checked before anything is mapped (sizes, 64-bit overflow, user
 * addresses in the lower half, no overlap in guest or user space), each
 * fd is fstat'ed to cover mmap_offset + size (no SIGBUS later), and
 * translations are clamped to the region they start in. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Regions one table may hold (vhost-user's own limit without the
 * CONFIGURE_MEM_SLOTS protocol feature). */
#define VU_MEM_MAX_REGIONS 8
/* Frontend addresses live in the lower half of a 64-bit address space. */
#define VU_MEM_USER_LIMIT (UINT64_C(1) << 63)

/* One region as the frontend sent it, not yet trusted. */
typedef struct VuMemRegionDesc {
    uint64_t guest_addr;
    uint64_t size;
    uint64_t user_addr;
    uint64_t mmap_offset;
} VuMemRegionDesc;

typedef struct VuMem VuMem;

/* Checks a region table without mapping anything: count within
 * 1..VU_MEM_MAX_REGIONS, sizes non-zero, no end overflowing 64 bits
 * (guest, user and file offset), user addresses in the lower half of the
 * address space, no two regions overlapping in guest or user space.
 * 0 or -EINVAL. */
int vu_mem_check_table(const VuMemRegionDesc *untrusted_regions, size_t n);

/* Maps the n regions from their fds (the table must pass
 * vu_mem_check_table; each fd must be a regular file at least
 * mmap_offset + size long). The fds are not consumed. */
int vu_mem_new(const VuMemRegionDesc *untrusted_regions, const int *fds, size_t n, VuMem **ret);
void vu_mem_free(VuMem *m);

/* Guest physical address -> pointer. The length that is mapped
 * contiguously from gpa within its region (at most len) goes to *ret_len.
 * -EFAULT when gpa is in no region, -EINVAL when len is 0. */
int vu_mem_gpa(const VuMem *m, uint64_t gpa, uint64_t len, void **ret_ptr, uint64_t *ret_len);
/* Frontend virtual address -> pointer for an object of len bytes that must
 * lie whole inside one region (rings). -EFAULT otherwise. */
int vu_mem_uva(const VuMem *m, uint64_t uva, uint64_t len, void **ret_ptr);
/* Like vu_mem_uva for a guest physical address. */
int vu_mem_gpa_whole(const VuMem *m, uint64_t gpa, uint64_t len, void **ret_ptr);

size_t vu_mem_n_regions(const VuMem *m);
