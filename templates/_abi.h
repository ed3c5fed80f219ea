/* The interface between a model's kernel library (c_kernels.c.j2) and the
   kernel runtime (kernel_runtime.pyx.j2): one exported `symjac_exports` (a symjac_model)
   describing the arguments, the drivers and the packed position tables.
   Bump SYMJAC_ABI on any change: the runtime refuses other versions. */
#include <stddef.h>
#define SYMJAC_ABI 1
typedef int (*symjac_driver_fn)(ptrdiff_t, const double **, const ptrdiff_t *, double **, int);
typedef struct {
    const char *kind;             /* "jacobian", "jacobian_values", ... */
    symjac_driver_fn run;         /* (n, args, arg row strides, outs, threads) -> 0, or -1 if out of memory */
    int n_outs;                   /* output buffers */
    const ptrdiff_t *out_sizes;   /* doubles per point in each */
    int out_ndim;                 /* shape of the single output of a fast-path kernel, else -1 */
    const ptrdiff_t *out_dims;
    int zeroed;                   /* that output must be handed over zeroed */
} symjac_driver;
typedef struct {
    const char *kind;             /* packed kernel */
    ptrdiff_t length;
    const ptrdiff_t *values;      /* flat index of each packed value in its full array */
} symjac_table;
typedef struct {
    int abi;                      /* SYMJAC_ABI */
    int index_size;               /* sizeof(ptrdiff_t) */
    int n_args;
    const ptrdiff_t *arg_sizes;
    const int *arg_ndims;
    const ptrdiff_t **arg_shapes;
    int n_drivers;
    const symjac_driver *drivers;
    int n_tables;
    const symjac_table *tables;
} symjac_model;
