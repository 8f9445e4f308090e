"""Shop analytics: conversion funnel, activity heat-map, RFM segments, association rules."""
