module profiler.invalid/bench/gowork

go 1.21
