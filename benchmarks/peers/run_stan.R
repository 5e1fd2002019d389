# Compile a Stan program with rstan and sample it twice: the first fit (compile +
# sampling, what a new user waits for) and a warm fit (the compiled model sampled again).
#
#   Rscript run_stan.R MODEL.stan DATA.R OUTDIR CHAINS WARMUP SAMPLES SEED
#
# DATA.R is an R dump file (rstan::read_rdump). Writes to OUTDIR: draws_first.csv and
# draws_warm.csv (columns chain, draw, then the parameters as Stan names them, lp__
# last), and timing.csv (name,value in seconds: compile, first_sampling, warm_sampling,
# and per-chain warm-up/sampling times from get_elapsed_time).
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 7) stop("usage: run_stan.R MODEL.stan DATA.R OUTDIR CHAINS WARMUP SAMPLES SEED")
t_start <- proc.time()[["elapsed"]]
model_file <- args[1]
data_file <- args[2]
out_dir <- args[3]
chains <- as.integer(args[4])
warmup <- as.integer(args[5])
samples <- as.integer(args[6])
seed <- as.integer(args[7])
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

suppressPackageStartupMessages(library(rstan))
rstan_options(auto_write = FALSE)  # no cached executable: the first fit compiles
t_loaded <- proc.time()[["elapsed"]]
data <- read_rdump(data_file)

t_compile <- system.time(
  sm <- stan_model(model_file, isystem = dirname(model_file), verbose = FALSE)
)[["elapsed"]]

run <- function(run_seed) {
  args <- list(sm, data = data, chains = chains, cores = min(chains, parallel::detectCores()),
               iter = warmup + samples, warmup = warmup, seed = as.integer(run_seed),
               refresh = 0, show_messages = FALSE)
  elapsed <- system.time(fit <- do.call(sampling, args))[["elapsed"]]
  list(fit = fit, elapsed = elapsed)
}

write_draws <- function(fit, path) {
  arr <- as.array(fit)  # iterations x chains x parameters
  parts <- lapply(seq_len(dim(arr)[2]), function(c) {
    df <- as.data.frame(arr[, c, , drop = TRUE])
    names(df) <- dimnames(arr)[[3]]
    cbind(data.frame(chain = c - 1, draw = seq_len(nrow(df)) - 1), df)
  })
  write.csv(do.call(rbind, parts), path, row.names = FALSE)
}

# Seeds SEED + 1 and SEED + 2: rstan 2.21 gives identical draws for seed = 0 and seed = 1.
first <- run(seed + 1L)
write_draws(first$fit, file.path(out_dir, "draws_first.csv"))
warm <- run(seed + 2L)
write_draws(warm$fit, file.path(out_dir, "draws_warm.csv"))

div <- function(fit) sum(sapply(get_sampler_params(fit, inc_warmup = FALSE),
                                function(x) sum(x[, "divergent__"])))
el <- get_elapsed_time(warm$fit)
timing <- data.frame(
  name = c("library_load", "compile", "first_sampling", "warm_sampling",
           "warm_chain_warmup_max", "warm_chain_sample_max", "warm_chain_total_max",
           "first_divergences", "warm_divergences", "rscript_in_r_total"),
  value = c(t_loaded - t_start, t_compile, first$elapsed, warm$elapsed,
            max(el[, "warmup"]), max(el[, "sample"]), max(rowSums(el)),
            div(first$fit), div(warm$fit), proc.time()[["elapsed"]] - t_start)
)
write.csv(timing, file.path(out_dir, "timing.csv"), row.names = FALSE)
cat(sprintf("rstan %s: compile %.1f s, first sampling %.1f s, warm sampling %.1f s\n",
            as.character(packageVersion("rstan")), t_compile, first$elapsed, warm$elapsed))
