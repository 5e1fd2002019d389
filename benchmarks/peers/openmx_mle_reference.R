# OpenMx's maximum-likelihood fit of a small continuous-time panel, stored as the
# reference that tests/test_mle.py compares kalmanad.mle.fit_mle against.
#
#   Rscript openmx_mle_reference.R DATA.csv OUT.csv
#
# DATA.csv: columns id, time, y1, y2 (NA = missing); every subject's first time is 0,
# where OpenMx's x0, P0 sit (the first step has length 0).
# Model (9 free parameters):
#   dx = A x dt + dW,  A = [[a11, a12], [a12, a22]] (symmetric: OpenMx 2.21's SSCT
#   integrates the process noise as int e^{A's} Q e^{As} ds, exact only for symmetric A),
#   Q = diag(q1, q2);  y = x + d + e,  e ~ N(0, diag(r1, r2));  x(0) ~ N(0, I).
# Writes OUT.csv (name,value): the estimates, their standard errors (se_<name>, from
# OpenMx's Hessian), -2 log-likelihood, status code, the seconds of the first mxRun,
# a second mxRun of the same model (warm) and mxTryHard (for benchmarks/bench_ml.py),
# and the OpenMx version.
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: openmx_mle_reference.R DATA.csv OUT.csv")
suppressPackageStartupMessages(library(OpenMx))
d <- read.csv(args[1])
ids <- unique(d$id)
manifest <- c("y1", "y2")
latent <- c("x1", "x2")

amat <- mxMatrix("Full", 2, 2, free = TRUE, values = c(-0.5, 0, 0, -0.5),
                 labels = c("a11", "a12", "a12", "a22"), name = "A")
bmat <- mxMatrix("Zero", 2, 1, name = "B")
cmat <- mxMatrix("Iden", 2, 2, dimnames = list(manifest, latent), name = "C")
dmat <- mxMatrix("Full", 2, 1, free = TRUE, values = 0, labels = c("d1", "d2"), name = "D")
qmat <- mxMatrix("Diag", 2, 2, free = TRUE, values = 1, lbound = 1e-8,
                 labels = c("q1", "q2"), name = "Q")
rmat <- mxMatrix("Diag", 2, 2, free = TRUE, values = 0.5, lbound = 1e-8,
                 labels = c("r1", "r2"), name = "R")
x0 <- mxMatrix("Full", 2, 1, values = 0, name = "x0")
p0 <- mxMatrix("Diag", 2, 2, values = 1, name = "P0")
umat <- mxMatrix("Unit", 1, 1, name = "u")  # D u is the manifest intercept
tmat <- mxMatrix("Full", 1, 1, free = FALSE, values = 0, labels = "data.time", name = "t")

subjects <- lapply(ids, function(i) {
  mxModel(paste0("s", i), amat, bmat, cmat, dmat, qmat, rmat, x0, p0, umat, tmat,
          mxData(d[d$id == i, c(manifest, "time")], type = "raw"),
          mxExpectationSSCT(A = "A", B = "B", C = "C", D = "D", Q = "Q", R = "R",
                            x0 = "x0", P0 = "P0", u = "u", t = "t"),
          mxFitFunctionML())
})
panel <- mxModel("panel", subjects, mxFitFunctionMultigroup(paste0("s", ids)))
t_first <- system.time(fit <- mxRun(panel, silent = TRUE, suppressWarnings = TRUE))[["elapsed"]]
t_warm <- system.time(mxRun(panel, silent = TRUE, suppressWarnings = TRUE))[["elapsed"]]
first_minus2ll <- fit$output$Minus2LogLikelihood
# polish from several perturbed starts
t_tryhard <- system.time(fit <- mxTryHard(fit, silent = TRUE, extraTries = 5))[["elapsed"]]

est <- omxGetParameters(fit)
se <- fit$output$standardErrors[names(est), 1]
out <- data.frame(
  name = c(names(est), paste0("se_", names(est)), "minus2ll", "status_code", "first_mxrun_s",
           "warm_mxrun_s", "first_mxrun_minus2ll", "tryhard_s", "openmx_version"),
  value = c(unname(est), unname(se), fit$output$Minus2LogLikelihood, fit$output$status$code,
            t_first, t_warm, first_minus2ll, t_tryhard, NA)
)
out$value[nrow(out)] <- as.character(packageVersion("OpenMx"))
write.csv(out, args[2], row.names = FALSE)
cat(sprintf("OpenMx %s: -2LL %.8f, status %d\n", as.character(packageVersion("OpenMx")),
            fit$output$Minus2LogLikelihood, fit$output$status$code))
